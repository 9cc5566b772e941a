#!/bin/sh
# cdc-offsets.sh - the database where the Debezium Servers keep their offsets (JDBC offset store,
# one table per instance), owned by a role of its own. Run once by the postgres image on a fresh
# data directory (/docker-entrypoint-initdb.d), as its superuser; scripts/docker-check.sh runs it
# against the test stack.
#
# Why a database of its own: `liquidity provision` gives Debezium's replication role no CREATE
# anywhere (cdc/README.md, "Production deployment"), and the catalog and the tenant databases are
# not Debezium's to write. Everything else (roles, catalog, tenant databases) is provisioned by
# `liquidity provision` and `liquidity migrate` (docker-compose.yml), not here.
#
# Environment: CDC_OFFSETS_PASSWORD (required), CDC_OFFSETS_USER [lqdty_cdc_offsets],
# CDC_OFFSETS_DB [cdc_offsets]; psql connects as libpq's PG* variables say (the image: its
# superuser over the local socket).
set -eu
: "${CDC_OFFSETS_PASSWORD:?CDC_OFFSETS_PASSWORD is required}"
psql -v ON_ERROR_STOP=1 -qAtX -d postgres \
  -v role="${CDC_OFFSETS_USER:-lqdty_cdc_offsets}" -v db="${CDC_OFFSETS_DB:-cdc_offsets}" \
  -v password="$CDC_OFFSETS_PASSWORD" <<'SQL'
SELECT format('CREATE ROLE %I LOGIN', :'role')
  WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'role') \gexec
SELECT format('ALTER ROLE %I LOGIN PASSWORD %L', :'role', :'password') \gexec
SELECT format('CREATE DATABASE %I OWNER %I', :'db', :'role')
  WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db') \gexec
SELECT format('REVOKE ALL ON DATABASE %I FROM PUBLIC', :'db') \gexec
SQL
