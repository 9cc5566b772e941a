"""Our rules for docker-compose.yml, beyond the compose-spec schema and Compose's own loader.

usage: compose_rules.py COMPOSE_JSON   (the output of `docker-compose config --format json`, with
every required variable set to `from-env-<NAME>`: scripts/docker-check.sh)

What the schema cannot see and `docker compose up` would only show at run time, on a machine with
Docker: a dependency that waits for a health check no one defined, a one-shot that is restarted
forever, a tenant without its Debezium Server, a secret written in the file, a port open to the
network. Prints one line per broken rule and exits 1 if there is any.
"""

import json
import re
import sys

# The image every role of the binary runs (Dockerfile at the repository root).
LIQUIDITY_IMAGE = "liquidity:local"
# Where `cdc-config` writes, and where each Debezium Server reads, inside the shared volume.
CDC_CONFIG_VOLUME = "cdc-config"
CDC_CONFIG_MOUNT = "/var/lib/liquidity"
CDC_CONFIG_DIR = "cdc-config"
# A password in a URL: scheme://user:PASSWORD@host
URL_PASSWORD = re.compile(r"://[^:/@\s]+:([^@\s]+)@")
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN")
ENV_VALUE = "from-env-"
# Where a value names another container: scheme://[user:password@]HOST:PORT, or a bare HOST:PORT.
HOST_IN_URL = re.compile(r"//(?:[^@/\s\"]+@)?([A-Za-z][\w.-]*):\d+")
BARE_HOST_PORT = re.compile(r"^([A-Za-z][\w.-]*):\d+$")
# Addresses a process binds itself to, not a container to reach.
OWN_ADDRESSES = {"localhost", "0.0.0.0"}
JSON_SETTINGS = ("TENANTS_CONFIG", "SOURCES_CONFIG", "SIMULATOR_CONFIG")
# A role answers /healthz and /readyz where it listens: the API on LISTEN_ADDR, a worker on METRICS_ADDR.
OPS_ADDRESS = ("LISTEN_ADDR", "METRICS_ADDR")
HEALTH_URL = re.compile(r"^http://127\.0\.0\.1:(\d+)(/healthz|/readyz)$")


def one_shot(service: dict) -> bool:
    return service.get("restart", "no") == "no"


def check(compose: dict) -> list[str]:
    services = compose["services"]
    errors = []

    def err(name: str, msg: str) -> None:
        errors.append(f"{name}: {msg}")

    for name, svc in services.items():
        # a long-running service says when it is ready; a one-shot ends instead
        if not one_shot(svc) and "healthcheck" not in svc:
            err(name, "a long-running service without a health check")
        if one_shot(svc) and "healthcheck" in svc:
            err(name, "a one-shot with a health check: dependents wait for its completion instead")
        for dep, how in (svc.get("depends_on") or {}).items():
            cond = how.get("condition")
            target = services.get(dep)
            if target is None:
                err(name, f"depends on {dep}, which does not exist")
                continue
            if cond == "service_healthy" and "healthcheck" not in target:
                err(name, f"waits for {dep} to be healthy, which has no health check: it would wait forever")
            if cond == "service_completed_successfully" and not one_shot(target):
                err(name, f"waits for {dep} to complete, which is restarted whenever it ends")
            if cond == "service_started":
                err(name, f"waits only for {dep} to start: wait for it to be healthy (or complete)")
        for port in svc.get("ports") or []:
            if port.get("host_ip") != "127.0.0.1":
                err(name, f"publishes port {port.get('target')} beyond the host's loopback")
        env = svc.get("environment") or {}
        for key, value in env.items():
            value = value or ""
            if SECRET_NAME.search(key) and not value.startswith(ENV_VALUE):
                err(name, f"{key} is written in the compose file: take it from the environment (docker/env.sh)")
            for password in URL_PASSWORD.findall(value):
                if not password.startswith(ENV_VALUE):
                    err(name, f"{key} holds a URL with a password written in the compose file")
            for host in HOST_IN_URL.findall(value) + BARE_HOST_PORT.findall(value):
                if host not in services and host not in OWN_ADDRESSES:
                    err(name, f"{key} names {host}, which is no service of this file")
            if key in JSON_SETTINGS:
                try:
                    json.loads(value)
                except json.JSONDecodeError as e:
                    err(name, f"{key} is not valid JSON: {e}")
        if svc.get("image") == LIQUIDITY_IMAGE:
            build = svc.get("build") or {}
            if not str(build.get("dockerfile", "Dockerfile")).endswith("Dockerfile") or not build.get("context"):
                err(name, f"runs {LIQUIDITY_IMAGE} without building it from the repository's Dockerfile")
            if svc.get("user") not in (None, ""):
                err(name, "overrides the image's non-root user")
            errors.extend(f"{name}: {e}" for e in check_role_health(svc))
        elif "build" not in svc and "@sha256:" not in svc.get("image", "") and ":" not in svc.get("image", ""):
            err(name, f"image {svc.get('image')} has no pinned tag")
    errors += check_debezium(services)
    errors += check_sources(services)
    return errors


def check_sources(services: dict) -> list[str]:
    """The workflow worker's SOURCES_CONFIG points at the ports the simulator listens on."""
    try:
        simulator = json.loads(services["sources"]["environment"]["SIMULATOR_CONFIG"])
        wanted = json.loads(services["workflow-worker"]["environment"]["SOURCES_CONFIG"])
    except (KeyError, json.JSONDecodeError) as e:
        return [f"sources, workflow-worker: SIMULATOR_CONFIG and SOURCES_CONFIG must both be set ({e})"]
    errors = []
    if simulator.get("host") != "0.0.0.0":
        errors.append("sources: SIMULATOR_CONFIG must listen on 0.0.0.0 to be reachable from other containers")
    listening = {name: f"http://sources:{s['port']}" for name, s in simulator.get("sources", {}).items()}
    if wanted != listening:
        errors.append(f"workflow-worker: SOURCES_CONFIG is {wanted}, the simulator serves {listening}")
    return errors


def check_role_health(svc: dict) -> list[str]:
    """A role's health check asks /healthz or /readyz on the port the role serves them on."""
    env = svc.get("environment") or {}
    ports = {env[k].rsplit(":", 1)[1] for k in OPS_ADDRESS if k in env}
    if not ports:
        return []  # the simulator: its sources' ports, checked with SOURCES_CONFIG
    test = (svc.get("healthcheck") or {}).get("test") or []
    m = HEALTH_URL.match(test[-1] if test else "")
    if not m or m.group(1) not in ports:
        return [f"its health check {test} must ask /healthz or /readyz on its own port ({', '.join(sorted(ports))})"]
    return []


def tenants_of(services: dict) -> list[dict]:
    env = services["cdc-config"]["environment"]
    return json.loads(env["TENANTS_CONFIG"])


def check_debezium(services: dict) -> list[str]:
    """One Debezium Server per tenant, each reading the file `cdc-config` renders for it."""
    errors = []
    render = services.get("cdc-config")
    if render is None:
        return ["cdc-config: missing (it renders the Debezium Server configs)"]
    command = render.get("command") or []
    try:
        out_dir = command[command.index("--out-dir") + 1]
    except (ValueError, IndexError):
        return ["cdc-config: no --out-dir in its command"]
    mounts = {m["target"]: m for m in render.get("volumes") or []}
    mounted = mounts.get(CDC_CONFIG_MOUNT, {}).get("source")
    if out_dir != f"{CDC_CONFIG_MOUNT}/{CDC_CONFIG_DIR}" or mounted != CDC_CONFIG_VOLUME:
        errors.append(f"cdc-config: must write {CDC_CONFIG_MOUNT}/{CDC_CONFIG_DIR} on the volume {CDC_CONFIG_VOLUME} "
                      f"mounted at {CDC_CONFIG_MOUNT} (the image's directory of its user)")
    expected = {f"debezium-{t['name']}": t["name"] for t in tenants_of(services)}
    present = {name for name, svc in services.items() if name.startswith("debezium-")}
    for name in sorted(present - expected.keys()):
        errors.append(f"{name}: a Debezium Server for no tenant of TENANTS_CONFIG")
    for name, tenant in sorted(expected.items()):
        svc = services.get(name)
        if svc is None:
            errors.append(f"{name}: missing; tenant {tenant} would have no change capture")
            continue
        config = [m for m in svc.get("volumes") or [] if m.get("target") == "/debezium/config"]
        want = f"{CDC_CONFIG_DIR}/{tenant}"
        if (len(config) != 1 or config[0].get("source") != CDC_CONFIG_VOLUME
                or (config[0].get("volume") or {}).get("subpath") != want):
            errors.append(f"{name}: must mount {CDC_CONFIG_VOLUME}:{want} at /debezium/config")
        deps = svc.get("depends_on") or {}
        if deps.get("cdc-config", {}).get("condition") != "service_completed_successfully":
            errors.append(f"{name}: must wait for cdc-config to complete (its config file)")
    return errors


def main() -> int:
    with open(sys.argv[1]) as f:
        compose = json.load(f)
    errors = check(compose)
    for e in errors:
        print(f"compose rule broken: {e}", file=sys.stderr)
    if not errors:
        print(f"compose rules: {len(compose['services'])} services ok")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
