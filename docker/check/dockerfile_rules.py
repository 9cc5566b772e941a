"""Our rules for the Dockerfile and its build context, and the build check's helpers.

usage: dockerfile_rules.py ROOT                        the rules (scripts/docker-check.sh dockerfile)
       dockerfile_rules.py ROOT --copy-context DIR     copy the build context (what .dockerignore
                                                       lets through) to DIR, as `COPY . .` would
       dockerfile_rules.py ROOT --check-binary FILE    the built binary needs nothing that
                                                       debian:bookworm-slim lacks

Rules: the build stages run docker/build.sh's steps, in order, and nothing else (one owner of
the build steps, which the --build check runs outside Docker); the runtime stage runs as a
non-root user with ENTRYPOINT ["liquidity"] and gets nothing from the builder but the binary; no
ARG or ENV carries a secret; the build context holds every file the crates read at compile time
and none of the files that hold secrets or build output. .dockerignore is read by docker-py's
matcher (the `docker` package), with Docker's rule that a file is excluded when a pattern
matches it or one of its parent directories, the last matching pattern winning.
"""

import argparse
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

from docker.utils.build import PatternMatcher, exclude_paths

# The steps of docker/build.sh, in the order the Dockerfile must run them.
BUILD_STEPS = ["chef", "plan", "deps", "app"]
BUILD_TOOL = "lqdty-build"
# Never in the context: secrets (.env from docker/env.sh, the local stacks' app.env), build output.
MUST_EXCLUDE = [".env", ".stack/dev/app.env", ".stack/venv/bin/python", "target/release/liquidity",
                "crates/cli/target/debug/x", ".git/config", "build.log"]
MUST_INCLUDE = ["Cargo.toml", "Cargo.lock", "docker/build.sh"]
# Files the crates read at compile time: include_str!/include_bytes! relative to the source file,
# sqlx::migrate! relative to the crate's manifest directory.
INCLUDE = re.compile(r'include_(?:str|bytes)!\(\s*"([^"]+)"\s*\)')
MIGRATE = re.compile(r'migrate!\(\s*"([^"]+)"\s*\)')
# What libc6 and libgcc-s1 provide: both are in every Debian image, slim included.
BASE_LIBS = re.compile(r"^(linux-vdso|ld-linux-x86-64|libc|libm|libgcc_s|libpthread|libdl|librt)\.so")
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|CREDENTIAL", re.I)
BINARY_COPY = re.compile(r"--from=\S+ \S+/liquidity /usr/local/bin/liquidity")


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile: comments dropped, continuation lines joined."""
    out, pending = [], ""
    for raw in dockerfile.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def stages(dockerfile: Path) -> list[dict]:
    """The stages in order: their name and instructions (ARGs before the first FROM dropped)."""
    result = []
    for word, args in instructions(dockerfile):
        if word == "FROM":
            m = re.match(r"(?:--\S+\s+)*(\S+)(?:\s+AS\s+(\S+))?", args, re.I)
            result.append({"from": m.group(1), "name": m.group(2) or str(len(result)), "body": []})
        elif result:
            result[-1]["body"].append((word, args))
    return result


def check_dockerfile(root: Path) -> list[str]:
    errors = []
    all_stages = stages(root / "Dockerfile")
    *build, runtime = all_stages
    steps = []
    for stage in build:
        for word, args in stage["body"]:
            if word == "RUN":
                cmd = args.split()
                if cmd[0] != BUILD_TOOL or len(cmd) < 2:
                    errors.append(f"stage {stage['name']}: RUN {args!r} is not a step of docker/build.sh")
                else:
                    steps.append(cmd[1])
            if word == "COPY" and args.endswith(f"/{BUILD_TOOL}") and not args.startswith("docker/build.sh "):
                errors.append(f"stage {stage['name']}: {BUILD_TOOL} must be docker/build.sh")
    if steps != BUILD_STEPS:
        errors.append(f"the build stages run {steps}, docker/build.sh's steps are {BUILD_STEPS} in this order")
    body = runtime["body"]
    users = [args for word, args in body if word == "USER"]
    if not users or users[-1].split(":")[0] in ("0", "root"):
        errors.append("runtime stage: must end as a non-root USER")
    entry = [args for word, args in body if word == "ENTRYPOINT"]
    if not entry or json.loads(entry[-1]) != ["liquidity"]:
        errors.append('runtime stage: ENTRYPOINT must be ["liquidity"]')
    for word, args in body:
        if word == "COPY" and "--from=" in args and not BINARY_COPY.fullmatch(args):
            errors.append(f"runtime stage: COPY {args!r}: only the binary comes from the build")
    for stage in all_stages:
        for word, args in stage["body"]:
            if word in ("ARG", "ENV") and SECRET_NAME.search(args.split("=")[0]):
                errors.append(f"stage {stage['name']}: {word} {args.split('=')[0]} bakes a secret into the image")
    return errors


def patterns(root: Path) -> list[str]:
    lines = (root / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def excluded(matcher: PatternMatcher, path: str) -> bool:
    """Docker's answer for PATH: the last pattern that matches it or a parent directory wins."""
    parts = path.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    result = False
    for pattern in matcher.patterns:
        if any(pattern.match(p) for p in prefixes):
            result = not pattern.exclusion
    return result


def compile_time_inputs(root: Path) -> list[str]:
    """Every file the crates' sources read at compile time, relative to ROOT."""
    found = set()
    for src in (root / "crates").glob("*/src/**/*.rs"):
        text = src.read_text()
        for rel in INCLUDE.findall(text):
            found.add((src.parent / rel).resolve())
        crate = src.relative_to(root / "crates").parts[0]
        for rel in MIGRATE.findall(text):
            found.add((root / "crates" / crate / rel).resolve())
    return sorted(str(p.relative_to(root.resolve())) for p in found)


def check_context(root: Path) -> list[str]:
    errors = []
    matcher = PatternMatcher(patterns(root))
    for path in MUST_EXCLUDE:
        if not excluded(matcher, path):
            errors.append(f".dockerignore: {path} would be sent to the build")
    needed = MUST_INCLUDE + [str(p.relative_to(root)) for p in (root / "crates").glob("*/Cargo.toml")]
    for path in needed + compile_time_inputs(root):
        if not (root / path).exists():
            errors.append(f"{path}: read by the build but missing")
        elif excluded(matcher, path):
            errors.append(f".dockerignore: {path} is read by the build but left out of the context")
    return errors


def copy_context(root: Path, dest: Path) -> None:
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for rel in sorted(exclude_paths(str(root), patterns(root))):
        src = root / rel
        if src.is_file() and not excluded(PatternMatcher(patterns(root)), rel):
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


def check_binary(path: Path) -> list[str]:
    out = subprocess.run(["ldd", str(path)], capture_output=True, text=True, check=True).stdout
    libs = [line.split()[0] for line in out.splitlines() if line.strip()]
    return [f"{path.name} links {lib}, which debian:bookworm-slim lacks" for lib in libs
            if not BASE_LIBS.match(Path(lib).name)]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("root", type=Path)
    ap.add_argument("--copy-context", type=Path)
    ap.add_argument("--check-binary", type=Path)
    a = ap.parse_args()
    if a.copy_context:
        copy_context(a.root, a.copy_context)
        return 0
    errors = check_binary(a.check_binary) if a.check_binary else check_dockerfile(a.root) + check_context(a.root)
    for e in errors:
        print(f"dockerfile rule broken: {e}", file=sys.stderr)
    if not errors:
        print("dockerfile rules: ok" if not a.check_binary else f"{a.check_binary}: links only libc6 and libgcc-s1")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
