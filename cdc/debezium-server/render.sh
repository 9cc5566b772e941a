#!/usr/bin/env bash
# render.sh - render one Debezium Server configuration per tenant from TENANTS_CONFIG.
#
# usage: TENANTS_CONFIG='[...]' PUBSUB_PROJECT=my-project cdc/debezium-server/render.sh OUT_DIR
#   writes OUT_DIR/<tenant name>/application.properties (mount it as the instance's
#   conf/application.properties; one Debezium Server instance per tenant database).
#
# Environment:
#   TENANTS_CONFIG        required, the tenant registry (see .env.example)
#   PUBSUB_PROJECT        required, Google Cloud project of the topic
#   PUBSUB_TOPIC          topic for every tenant's events              [tenant-cdc]
#   CDC_DATABASE_USER     replication role of Debezium (`liquidity provision` creates it: LOGIN
#                         REPLICATION, CONNECT on the tenant databases, SELECT on report_contents).
#                         Replaces the user of every databaseUrl, which is the database's owner.
#                         [unset: the databaseUrl's own user]
#   CDC_DATABASE_PASSWORD its password, only read with RENDER_INLINE_SECRETS=1
#   CDC_OFFSETS_JDBC_URL  where offsets live, e.g. jdbc:postgresql://host:5432/cdc
#                         [unset: each tenant's own database; the replication role then needs
#                         CREATE on its public schema, which provisioning does not grant]
#   CDC_OFFSETS_USER      user for CDC_OFFSETS_JDBC_URL                 [the database user above]
#   RENDER_INLINE_SECRETS 1 = write the passwords (CDC_DATABASE_PASSWORD, else the databaseUrl's)
#                         into the files (local tries only). Default: the files reference
#                         ${TENANT_DB_PASSWORD} (the password of the database user above) and
#                         ${CDC_OFFSETS_PASSWORD}, which each instance reads from its environment
#                         (a secret), so the rendered files hold no secret.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
out=${1:-}
[ -n "$out" ] || { echo "usage: $0 OUT_DIR" >&2; exit 2; }
[ -n "${TENANTS_CONFIG:-}" ] || { echo "render.sh: TENANTS_CONFIG is not set" >&2; exit 2; }
[ -n "${PUBSUB_PROJECT:-}" ] || { echo "render.sh: PUBSUB_PROJECT is not set" >&2; exit 2; }
command -v python3 >/dev/null || { echo "render.sh: python3 is required" >&2; exit 2; }

mkdir -p "$out"
TEMPLATE="$here/application.properties.template" OUT_DIR="$out" python3 - <<'PY'
import json, os, re, sys, uuid
from urllib.parse import parse_qs, unquote, urlsplit


def fail(msg):
    print(f"render.sh: {msg}", file=sys.stderr)
    sys.exit(2)


try:
    tenants = json.loads(os.environ["TENANTS_CONFIG"])
except json.JSONDecodeError as e:
    fail(f"TENANTS_CONFIG is not valid JSON: {e}")
if not isinstance(tenants, list) or not tenants:
    fail("TENANTS_CONFIG must be a non-empty JSON array")

template = open(os.environ["TEMPLATE"]).read()
out_dir = os.environ["OUT_DIR"]
inline = os.environ.get("RENDER_INLINE_SECRETS") == "1"
offsets_url = os.environ.get("CDC_OFFSETS_JDBC_URL")
cdc_user = os.environ.get("CDC_DATABASE_USER")
if inline and cdc_user and not os.environ.get("CDC_DATABASE_PASSWORD"):
    fail("RENDER_INLINE_SECRETS=1 with CDC_DATABASE_USER needs CDC_DATABASE_PASSWORD")
names = set()
for i, t in enumerate(tenants):
    try:
        tid = str(uuid.UUID(t["id"]))
        name, url = t["name"], t["databaseUrl"]
    except (KeyError, TypeError, ValueError):
        fail(f"TENANTS_CONFIG[{i}] needs a UUID id, a name and a databaseUrl")
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name) or name in names:
        fail(f"TENANTS_CONFIG[{i}]: tenant name {name!r} must be unique and a safe directory name")
    names.add(name)
    u = urlsplit(url)
    if u.scheme not in ("postgres", "postgresql") or not u.hostname or not u.username or len(u.path) < 2:
        fail(f"TENANTS_CONFIG[{i}] ({name}): databaseUrl must be postgres://user:password@host:port/dbname")
    dbname = unquote(u.path[1:])
    port = u.port or 5432
    sslmode = parse_qs(u.query).get("sslmode", ["prefer"])[0]
    suffix = re.sub(r"[^a-z0-9_]", "_", dbname.lower())
    user = cdc_user or unquote(u.username)
    password = os.environ.get("CDC_DATABASE_PASSWORD", "") if cdc_user else unquote(u.password or "")
    values = {
        "TENANT_ID": tid,
        "TENANT_NAME": name,
        "PUBSUB_PROJECT": os.environ["PUBSUB_PROJECT"],
        "PUBSUB_TOPIC": os.environ.get("PUBSUB_TOPIC", "tenant-cdc"),
        "DB_HOST": u.hostname,
        "DB_PORT": str(port),
        "DB_USER": user,
        "DB_PASSWORD": password if inline else "${TENANT_DB_PASSWORD}",
        "DB_NAME": dbname,
        "DB_SSLMODE": sslmode,
        "SLOT_NAME": f"dbz_{suffix}",
        "OFFSETS_JDBC_URL": offsets_url or f"jdbc:postgresql://{u.hostname}:{port}/{dbname}?sslmode={sslmode}",
        "OFFSETS_USER": os.environ.get("CDC_OFFSETS_USER") or user,
        # a separate offsets database always takes its password from the instance's environment
        "OFFSETS_PASSWORD": "${CDC_OFFSETS_PASSWORD}" if offsets_url else (password if inline else "${TENANT_DB_PASSWORD}"),
        "OFFSETS_TABLE": f"dbz_offsets_{suffix}",
    }
    text = re.sub(r"@@([A-Z_]+)@@", lambda m: values[m.group(1)], template)
    d = os.path.join(out_dir, name)
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, "application.properties")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    need = ([] if inline else ["TENANT_DB_PASSWORD"]) + (["CDC_OFFSETS_PASSWORD"] if offsets_url else [])
    print(f"{path}  (tenant {name} {tid}, slot dbz_{suffix}"
          + (f"; instance env: {', '.join(need)}" if need else "") + ")")
PY
