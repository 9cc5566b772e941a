#!/usr/bin/env bash
# env.sh - write the secrets of the compose stack to .env (mode 0600) next to docker-compose.yml,
# where `docker compose` reads them. Run it once; it never overwrites an existing .env (delete the
# file to rotate everything, then `docker compose down -v`: the database keeps the old passwords).
#
# usage: docker/env.sh [FILE]   (default: .env at the repository root; .gitignore and
#                               .dockerignore keep it out of git and out of the image)
#
# Every value is random: the compose file has no default for any of them, and `liquidity api`
# refuses a JWT secret that is short, predictable or published.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
file=${1:-$root/.env}
if [ -e "$file" ]; then
  echo "env.sh: $file exists; keeping it" >&2
  exit 0
fi
# URL-safe (base64url, no padding): the passwords go into postgres:// URLs unescaped
random_password() { head -c 24 /dev/urandom | base64 -w 0 | tr '+/' '-_' | tr -d '='; }
(
  umask 077
  cat >"$file" <<ENV
# Secrets of docker-compose.yml, written by docker/env.sh on $(date -u +%F). Never commit this file.
# PostgreSQL superuser: the postgres image and \`liquidity provision\` only.
LQDTY_PG_ADMIN_PASSWORD=$(random_password)
# One owner role per database (liquidity provision creates them with these passwords).
LQDTY_CATALOG_PASSWORD=$(random_password)
LQDTY_T1_PASSWORD=$(random_password)
LQDTY_T2_PASSWORD=$(random_password)
LQDTY_T3_PASSWORD=$(random_password)
# Debezium's replication role, and the role of its offsets database.
LQDTY_CDC_PASSWORD=$(random_password)
LQDTY_CDC_OFFSETS_PASSWORD=$(random_password)
# HS256 secret of the API's tokens (48 random bytes).
JWT_SECRET=$(head -c 48 /dev/urandom | base64 -w 0)
ENV
)
echo "env.sh: wrote $file" >&2
