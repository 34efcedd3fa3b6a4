#!/usr/bin/env python3
"""Checks every file under deploy/ without a container engine or a cluster.

    python3 scripts/validate_deploy.py --omega PATH/TO/omega

Prints one line per file checked (`ok` or `FAIL` with the problems) and exits
non-zero on any problem. Needs PyYAML, jsonschema, kubernetes-validate and
dockerfile-parse (pip), and systemd-analyze; all checks run offline.

- Dockerfile: parses (dockerfile-parse); several FROM stages, every
  `COPY --from` names an earlier stage, COPY sources exist, the final stage
  installs ffmpeg, runs as a non-root USER, has a HEALTHCHECK on /healthz and
  exposes 8420/tcp and 8421/udp.
- omega-entrypoint.sh: `sh -n`, then run against a stand-in `omega` in each
  case (create, join, restart, join without a token, join from files).
- compose.yaml: the compose-spec JSON schema (scripts/compose-spec.schema.json),
  three omega services, one creating the cluster and two joining it with a
  token, fixed addresses matching their Raft listen addresses.
- omega.service: `systemd-analyze verify` (ExecStart pointed at --omega in a
  temporary copy), the hardening options, and `systemd-analyze security
  --offline` under a threshold.
- Kubernetes manifests: the bundled Kubernetes JSON schemas (strict) for
  several versions, then cross-references between the objects.
- TOML configs (the systemd example, the ConfigMap's): every table and key
  exists in node/src/config.rs.
- Grafana dashboard: parses, uses the ${DS_PROMETHEUS} input, and every
  metric and label its queries use exists in the Rust sources.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
COMPOSE_SCHEMA = ROOT / "scripts" / "compose-spec.schema.json"
KUBE_VERSIONS = ("1.29.0", "1.31.0", "1.33.0")
SOURCE_DIRS = ("node/src", "consensus/src", "storage/src", "transcode/src")
HTTP_PORT, RAFT_PORT = 8420, 8421

try:
    import yaml
    import jsonschema
    import kubernetes_validate
    from dockerfile_parse import DockerfileParser
except ImportError as error:  # pragma: no cover - environment problem
    print(
        f"validate_deploy: missing Python package ({error.name}); install with "
        "python3 -m pip install pyyaml jsonschema kubernetes-validate dockerfile-parse",
        file=sys.stderr,
    )
    sys.exit(2)


class Problems(list):
    def check(self, condition: object, message: str) -> bool:
        if not condition:
            self.append(message)
        return bool(condition)


# --------------------------------------------------------------------------
# Facts from the Rust sources (so that deploy files cannot drift from them)
# --------------------------------------------------------------------------


def rust_sources() -> list[Path]:
    files: list[Path] = []
    for folder in SOURCE_DIRS:
        files.extend(sorted((ROOT / folder).rglob("*.rs")))
    return files


def source_metrics() -> tuple[dict[str, str], set[str]]:
    """Metric name -> kind, and label names, from metrics::{counter,gauge,histogram}! calls."""
    metrics: dict[str, str] = {}
    labels: set[str] = set()
    direct = re.compile(r'metrics::(counter|gauge|histogram)!\(\s*"([a-zA-Z_:][a-zA-Z0-9_:]*)"')
    helper = re.compile(r"let\s+(\w+)\s*=\s*\|[^|]*\|\s*\{\s*metrics::(counter|gauge|histogram)!\(\s*[a-z_]\w*\s*\)")
    label_pair = re.compile(r'metrics::(?:counter|gauge|histogram)!\([^;]*?"([a-z_][a-z0-9_]*)"\s*=>')
    label_tuple = re.compile(r'\(\s*"([a-z_][a-z0-9_]*)"\s*,\s*\w+\s*\)')
    for path in rust_sources():
        text = path.read_text(encoding="utf-8")
        if "metrics::" not in text:
            continue
        for kind, name in direct.findall(text):
            metrics[name] = kind
        for function, kind in helper.findall(text):
            for name in re.findall(rf'\b{function}\(\s*"([a-zA-Z_:][a-zA-Z0-9_:]*)"', text):
                metrics[name] = kind
        labels.update(label_pair.findall(text))
        # Label arrays handed to a macro (`let labels = [("method", m), ...]`).
        if re.search(r"metrics::(?:counter|gauge|histogram)!\([^)]*&\w+", text):
            labels.update(label_tuple.findall(text))
    return metrics, labels


def config_schema() -> dict[str, object]:
    """The config file's tables and keys, from the serde structs in node/src/config.rs."""
    text = (ROOT / "node/src/config.rs").read_text(encoding="utf-8")
    structs: dict[str, dict[str, str]] = {}
    for name, body in re.findall(r"pub struct (File\w*)\s*\{(.*?)\n\}", text, re.S):
        structs[name] = dict(re.findall(r"pub (\w+):\s*([^,]+),", body))

    def shape(struct: str) -> dict[str, object]:
        out: dict[str, object] = {}
        for key, ty in structs[struct].items():
            inner = re.sub(r"^Option<(.*)>$", r"\1", ty.strip())
            if inner in structs:
                out[key] = shape(inner)
            elif inner.startswith("BTreeMap<") or inner.startswith("HashMap<"):
                out[key] = "map"
            else:
                out[key] = inner
        return out

    return shape("FileConfig")


def check_toml(text: str, schema: dict[str, object], problems: Problems, where: str) -> None:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        problems.append(f"{where}: TOML does not parse: {error}")
        return

    def walk(value: dict, shape: dict, path: str) -> None:
        for key, item in value.items():
            name = f"{path}{key}"
            if key not in shape:
                problems.append(f"{where}: unknown key {name} (not in node/src/config.rs)")
            elif isinstance(shape[key], dict):
                if problems.check(isinstance(item, dict), f"{where}: {name} must be a table"):
                    walk(item, shape[key], name + ".")
            elif shape[key] == "map":
                problems.check(isinstance(item, dict), f"{where}: {name} must be a table")
            elif shape[key] == "bool":
                problems.check(isinstance(item, bool), f"{where}: {name} must be true or false")
            elif shape[key] in ("u8", "u16", "u32", "u64", "usize"):
                problems.check(isinstance(item, int) and not isinstance(item, bool), f"{where}: {name} must be an integer")
            elif shape[key] in ("String", "PathBuf"):
                problems.check(isinstance(item, str), f"{where}: {name} must be a string")

    walk(data, schema, "")
    for key in ("listen",):
        if isinstance(data.get(key), str):
            problems.check(re.fullmatch(r"[0-9.]+:\d+|\[[0-9a-fA-F:]+\]:\d+", data[key]), f"{where}: {key} is not IP:port")
    cluster = data.get("cluster", {})
    address = r"[0-9.]+:\d+|\[[0-9a-fA-F:]+\]:\d+"
    host = r"[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*:\d+"
    for key, allowed, what in (("listen", address, "an IP address and port"),
                               ("advertise", f"{address}|{host}", "an IP address or host name, and a port")):
        value = cluster.get(key) if isinstance(cluster, dict) else None
        if isinstance(value, str) and value != "@ADVERTISE@":
            problems.check(re.fullmatch(allowed, value), f"{where}: cluster.{key} = {value!r} must be {what}")


def known_env_vars() -> set[str]:
    names: set[str] = set()
    for path in rust_sources():
        names.update(re.findall(r'"(OMEGA_[A-Z0-9_]+)"', path.read_text(encoding="utf-8")))
    names.update(re.findall(r"\b(OMEGA_[A-Z0-9_]+)\b", (DEPLOY / "docker/omega-entrypoint.sh").read_text()))
    return names


# --------------------------------------------------------------------------
# Dockerfile and entrypoint
# --------------------------------------------------------------------------


def check_dockerfile(path: Path, problems: Problems) -> str:
    parser = DockerfileParser(fileobj=io.BytesIO(path.read_bytes()))
    instructions = [item for item in parser.structure if item["instruction"] != "COMMENT"]
    stages: list[dict] = []
    for item in instructions:
        if item["instruction"] == "FROM":
            words = item["value"].split()
            name = words[2] if len(words) >= 3 and words[1].lower() == "as" else None
            stages.append({"image": words[0], "name": name, "items": []})
        elif stages:
            stages[-1]["items"].append(item)
        elif item["instruction"] != "ARG":
            problems.append(f"{item['instruction']} before the first FROM")
    problems.check(len(stages) >= 3, f"expected at least 3 FROM stages (web, build, runtime), found {len(stages)}")
    if not stages:
        return "no stages"
    names = [stage["name"] for stage in stages]
    for index, stage in enumerate(stages):
        for item in stage["items"]:
            if item["instruction"] in ("COPY", "ADD"):
                words = item["value"].split()
                source = next((w.split("=", 1)[1] for w in words if w.startswith("--from=")), None)
                if source is not None:
                    problems.check(source in names[:index], f"line {item['startline'] + 1}: COPY --from={source} is no earlier stage")
                else:
                    for src in [w for w in words if not w.startswith("--")][:-1]:
                        problems.check((ROOT / src).exists(), f"line {item['startline'] + 1}: COPY source {src} does not exist")
    # The build stage holds every workspace member: cargo loads the whole
    # workspace even to build one package (the image once lacked p2p/).
    members = tomllib.loads((ROOT / "Cargo.toml").read_text())["workspace"]["members"]
    build = next((stage for stage in stages if any(item["instruction"] == "RUN" and "cargo build" in item["value"] for item in stage["items"])), None)
    if problems.check(build, "no stage runs cargo build"):
        copied: set[str] = set()
        for item in build["items"]:
            if item["instruction"] in ("COPY", "ADD") and "--from=" not in item["value"]:
                sources = [w for w in item["value"].split() if not w.startswith("--")][:-1]
                copied.update(source.rstrip("/") for source in sources)
        whole_tree = "." in copied
        for member in members:
            problems.check(whole_tree or member in copied, f"workspace member {member}/ is not copied into the build stage")
        check_build_context(sorted(copied), problems)
        built = re.search(r"cargo build[^&;]*-p\s+(\S+)", " ".join(item["value"] for item in build["items"] if item["instruction"] == "RUN"))
        if built:
            packages = {tomllib.loads((ROOT / member / "Cargo.toml").read_text())["package"]["name"] for member in members}
            problems.check(built.group(1) in packages, f"cargo build -p {built.group(1)}: no workspace member has that name")
    final = stages[-1]
    final_items = final["items"]
    runs = " ".join(item["value"] for item in final_items if item["instruction"] == "RUN")
    problems.check(re.search(r"apt-get install[^&;]*\bffmpeg\b", runs), "the final stage does not install ffmpeg")
    users = [item["value"].split(":")[0].strip() for item in final_items if item["instruction"] == "USER"]
    problems.check(users, "the final stage sets no USER")
    if users:
        problems.check(users[-1] not in ("root", "0"), f"the final stage runs as {users[-1]}")
        problems.check(f"useradd" in runs and users[-1] in runs, f"the final stage does not create user {users[-1]}")
    health = [item["value"] for item in final_items if item["instruction"] == "HEALTHCHECK"]
    problems.check(health and "/healthz" in health[-1], "the final stage has no HEALTHCHECK on /healthz")
    problems.check("/healthz" in served_paths(), "the binary serves no /healthz")
    if health:
        probe = re.search(r'"(curl|wget)"', health[-1])
        problems.check(probe and probe.group(1) in runs, "the HEALTHCHECK's client is not installed in the final stage")
    exposed = " ".join(item["value"] for item in final_items if item["instruction"] == "EXPOSE").split()
    problems.check(f"{HTTP_PORT}/tcp" in exposed or str(HTTP_PORT) in exposed, f"{HTTP_PORT}/tcp is not exposed")
    problems.check(f"{RAFT_PORT}/udp" in exposed, f"{RAFT_PORT}/udp is not exposed")
    entry = [item["value"] for item in final_items if item["instruction"] == "ENTRYPOINT"]
    problems.check(entry and "omega-entrypoint" in entry[-1], "ENTRYPOINT does not run omega-entrypoint")
    env = " ".join(item["value"] for item in final_items if item["instruction"] == "ENV")
    problems.check("OMEGA_DATA_DIR=" in env, "the image does not set OMEGA_DATA_DIR")
    return f"{len(stages)} stages ({', '.join(str(n) for n in names)}), final runs as {users[-1] if users else '?'}"


def check_entrypoint(path: Path, problems: Problems) -> str:
    result = subprocess.run(["sh", "-n", str(path)], capture_output=True, text=True)
    if not problems.check(result.returncode == 0, f"sh -n: {result.stderr.strip()}"):
        return "syntax error"
    problems.check(os.stat(path).st_mode & stat.S_IXUSR, "not executable")
    cases = 0
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        fake = bin_dir / "omega"
        fake.write_text('#!/bin/sh\nprintf "%s\\n" "$*" "token=${OMEGA_JOIN_TOKEN-unset}" > "$OUT"\n')
        fake.chmod(0o755)

        def run(name: str, env: dict[str, str], identity: bool, expect_rc: int, args: str | None, token: str | None):
            nonlocal cases
            cases += 1
            data = tmp_path / f"data-{name}"
            (data / "cluster").mkdir(parents=True)
            if identity:
                (data / "cluster/identity").write_bytes(b"x")
            out = tmp_path / f"out-{name}"
            full = {"PATH": f"{bin_dir}:/usr/bin:/bin", "OMEGA_DATA_DIR": str(data), "OUT": str(out), **env}
            done = subprocess.run(["sh", str(path), "--media", "/media"], env=full, capture_output=True, text=True)
            if not problems.check(done.returncode == expect_rc, f"case {name}: exit {done.returncode}, expected {expect_rc} ({done.stderr.strip()})"):
                return
            if args is not None:
                lines = out.read_text().splitlines() if out.exists() else ["(omega not run)", ""]
                problems.check(lines[0] == args, f"case {name}: omega {lines[0]!r}, expected {args!r}")
                problems.check(lines[1] == f"token={token or 'unset'}", f"case {name}: {lines[1]}, expected token={token or 'unset'}")

        run("create", {"OMEGA_JOIN_TOKEN": "stale"}, False, 0, "serve --media /media", None)
        run("join", {"OMEGA_JOIN_ADDR": "10.0.0.5:8421", "OMEGA_JOIN_TOKEN": "T1"}, False, 0,
            "serve --join 10.0.0.5:8421 --media /media", "T1")
        run("restart", {"OMEGA_JOIN_ADDR": "10.0.0.5:8421", "OMEGA_JOIN_TOKEN": "T1"}, True, 0, "serve --media /media", None)
        run("no-token", {"OMEGA_JOIN_ADDR": "10.0.0.5:8421", "OMEGA_JOIN_TOKEN": ""}, False, 64, None, None)
        (tmp_path / "addr").write_text("omega-0-raft:8421\n")
        (tmp_path / "token").write_text("T2\n")
        run("files", {"OMEGA_JOIN_ADDR_FILE": str(tmp_path / "addr"), "OMEGA_JOIN_TOKEN_FILE": str(tmp_path / "token")},
            False, 0, "serve --join omega-0-raft:8421 --media /media", "T2")
        run("files-absent", {"OMEGA_JOIN_ADDR_FILE": str(tmp_path / "none"), "OMEGA_JOIN_TOKEN_FILE": str(tmp_path / "none")},
            False, 0, "serve --media /media", None)
    return f"sh -n and {cases} behaviour cases"


def check_build_context(sources: list[str], problems: Problems) -> None:
    """The build stage's sources, copied alone into a scratch folder as the
    Dockerfile copies them, make a workspace cargo can load (`cargo metadata
    --no-deps --offline`: every member's manifest found): what `cargo build`
    needs before it resolves anything."""
    cargo = shutil.which("cargo") or str(Path.home() / ".cargo/bin/cargo")
    if not Path(cargo).exists():
        problems.append("cargo is not installed: the build context was not checked")
        return
    skip = shutil.ignore_patterns("target", "node_modules", "dist", ".git")
    with tempfile.TemporaryDirectory() as scratch:
        for source in sources:
            origin = ROOT / source
            if origin.is_dir():
                shutil.copytree(origin, Path(scratch) / source, ignore=skip)
            elif origin.exists():
                shutil.copy(origin, Path(scratch) / source)
        done = subprocess.run(
            [cargo, "metadata", "--no-deps", "--offline", "--format-version", "1"],
            cwd=scratch, capture_output=True, text=True,
        )
        lines = done.stderr.strip().splitlines()
        said = " ".join(line.strip() for line in lines if line.strip())[:300]
        problems.check(done.returncode == 0, f"the build stage's sources do not load as a workspace: {said}")


def served_paths() -> set[str]:
    """The fixed paths the binary's HTTP router serves at its root."""
    text = (ROOT / "node/src/http.rs").read_text()
    return set(re.findall(r'\.route\("(/[^"]*)"', text))


# A join token given as a value on a command line (`--token-file` and
# `--token -`, standard input, are fine): `ps` shows it to every local user.
TOKEN_ON_COMMAND_LINE = re.compile(r"--token(?:=|\s+)(?!-(?:\s|$|\"|'))\S")


def check_no_secret_on_command_line(path: Path, problems: Problems) -> None:
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if TOKEN_ON_COMMAND_LINE.search(line):
            problems.append(f"line {number}: a join token on a command line (use OMEGA_JOIN_TOKEN or --token-file)")


def check_dockerignore(path: Path, problems: Problems) -> str:
    lines = {line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")}
    for needed in ("target", "node/web/node_modules", ".git"):
        problems.check(needed in lines, f"does not exclude {needed}")
    return f"{len(lines)} patterns"


# --------------------------------------------------------------------------
# Compose
# --------------------------------------------------------------------------


def check_compose(path: Path, problems: Problems) -> str:
    data = yaml.safe_load(path.read_text())
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    validator = jsonschema.Draft7Validator(schema)
    for error in sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path)):
        problems.append(f"compose schema: {'/'.join(str(p) for p in error.absolute_path)}: {error.message}")
    services = data.get("services", {})
    omega = {name: svc for name, svc in services.items() if str(svc.get("image", "")).startswith("${OMEGA_IMAGE") or "omega" in str(svc.get("image", ""))}
    problems.check(len(omega) == 3, f"expected 3 omega services, found {len(omega)}")
    creators = [n for n, s in omega.items() if "OMEGA_JOIN_ADDR" not in (s.get("environment") or {})]
    joiners = [n for n, s in omega.items() if "OMEGA_JOIN_ADDR" in (s.get("environment") or {})]
    problems.check(len(creators) == 1, f"expected one service creating the cluster, found {creators}")
    problems.check(len(joiners) == 2, f"expected two services joining, found {joiners}")
    networks = data.get("networks", {})
    addresses: dict[str, str] = {}
    for name, svc in omega.items():
        env = svc.get("environment") or {}
        problems.check(isinstance(env, dict), f"{name}: environment must be a mapping")
        listen = env.get("OMEGA_CLUSTER_LISTEN", "")
        ips = [cfg.get("ipv4_address") for cfg in (svc.get("networks") or {}).values() if isinstance(cfg, dict)]
        problems.check(ips and listen == f"{ips[0]}:{RAFT_PORT}",
                       f"{name}: OMEGA_CLUSTER_LISTEN {listen!r} must be its fixed address {ips[:1]}:{RAFT_PORT} (members record it)")
        addresses[name] = listen
        mounts = [v.split(":")[1] for v in svc.get("volumes", []) if isinstance(v, str)]
        problems.check("/var/lib/omega" in mounts, f"{name}: no volume on /var/lib/omega")
        problems.check(str(svc.get("user", "")).split(":")[0] not in ("", "0", "root"), f"{name}: user must be non-root")
        problems.check("ALL" in svc.get("cap_drop", []), f"{name}: cap_drop ALL missing")
    for name in joiners:
        env = omega[name]["environment"]
        problems.check(env.get("OMEGA_JOIN_ADDR") in (addresses.get(creators[0]) if creators else None,),
                       f"{name}: joins {env.get('OMEGA_JOIN_ADDR')!r}, not the creating node's cluster address")
        problems.check(str(env.get("OMEGA_JOIN_TOKEN", "")).startswith("${"), f"{name}: OMEGA_JOIN_TOKEN must come from a variable")
    for svc in omega.values():
        for net in (svc.get("networks") or {}):
            problems.check(net in networks, f"network {net} is not defined")
    data_volumes = [v.split(":")[0] for s in omega.values() for v in s.get("volumes", []) if str(v).endswith(":/var/lib/omega")]
    problems.check(len(set(data_volumes)) == len(data_volumes), "services share a data volume")
    for volume in data_volumes:
        problems.check(volume in (data.get("volumes") or {}), f"volume {volume} is not defined")
    for name, svc in omega.items():
        build = svc.get("build")
        if isinstance(build, dict):
            context = (path.parent / build.get("context", ".")).resolve()
            problems.check((context / build.get("dockerfile", "Dockerfile")).exists(), f"{name}: build dockerfile does not exist")
    # Every variable the file interpolates is documented in env.example.
    used = set(re.findall(r"\$\{([A-Z0-9_]+)", path.read_text()))
    example = path.parent / "env.example"
    documented = set(re.findall(r"^([A-Z0-9_]+)=", example.read_text(), re.M)) if example.exists() else set()
    problems.check(used <= documented, f"variables missing from env.example: {sorted(used - documented)}")
    return f"compose schema, services {sorted(omega)}, {creators} creates, {joiners} join"


def check_env_file(path: Path, problems: Problems) -> str:
    known = known_env_vars() | {"OMEGA_SERVE_ARGS", "OMEGA_IMAGE", "OMEGA_MEDIA_DIR", "OMEGA_JOIN_TOKEN_2", "OMEGA_JOIN_TOKEN_3"}
    count = 0
    for number, line in enumerate(path.read_text().splitlines(), 1):
        body = line.lstrip("#").strip() if re.match(r"#?[A-Z][A-Z0-9_]*=", line) else None
        if line.strip() and not line.startswith("#") and body is None:
            problems.append(f"line {number}: not KEY=VALUE")
        if body is None:
            continue
        count += 1
        key = body.split("=", 1)[0]
        if key.startswith("OMEGA_"):
            problems.check(key in known, f"line {number}: {key} is read by nothing (not in the Rust sources, the entrypoint or the deploy files)")
    return f"{count} variables"


# --------------------------------------------------------------------------
# systemd
# --------------------------------------------------------------------------

HARDENING = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": None,
    "PrivateTmp": "yes",
    "PrivateDevices": None,
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectKernelLogs": "yes",
    "ProtectControlGroups": "yes",
    "RestrictNamespaces": "yes",
    "RestrictRealtime": "yes",
    "RestrictSUIDSGID": "yes",
    "LockPersonality": "yes",
    "SystemCallArchitectures": "native",
    "CapabilityBoundingSet": "",
    "StateDirectory": "omega",
    "ReadWritePaths": None,
}


def parse_unit(text: str) -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")) or "=" not in line:
            continue
        key, value = line.split("=", 1)
        values.setdefault(key.strip(), []).append(value.strip())
    return values


def check_unit(path: Path, omega: Path, problems: Problems) -> str:
    text = path.read_text()
    values = parse_unit(text)
    for key, wanted in HARDENING.items():
        if problems.check(key in values, f"{key} is not set"):
            if wanted is not None:
                problems.check(values[key][-1] == wanted, f"{key}={values[key][-1]}, expected {wanted!r}")
    problems.check(values.get("ProtectHome", ["no"])[-1] in ("yes", "read-only", "tmpfs"), "ProtectHome must be yes/read-only/tmpfs")
    user = values.get("User", [""])[-1]
    problems.check(user and user not in ("root", "0") and "DynamicUser" not in values, f"needs a dedicated User (found {user!r})")
    families = set(" ".join(values.get("RestrictAddressFamilies", [])).split())
    problems.check({"AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK"} <= families, f"RestrictAddressFamilies {sorted(families)} lacks one of AF_UNIX AF_INET AF_INET6 AF_NETLINK")
    problems.check("@system-service" in values.get("SystemCallFilter", []), "SystemCallFilter=@system-service is missing")
    data_dir = next((v.split("=", 1)[1] for v in values.get("Environment", []) if v.startswith("OMEGA_DATA_DIR=")), None)
    problems.check(data_dir == f"/var/lib/{values.get('StateDirectory', ['?'])[-1]}", f"OMEGA_DATA_DIR={data_dir} is not the StateDirectory")
    problems.check(data_dir in values.get("ReadWritePaths", [""])[-1].split(), "ReadWritePaths does not include the data directory")
    exec_start = values.get("ExecStart", [""])[-1]
    problems.check(exec_start.split()[1:2] == ["serve"], f"ExecStart does not run `omega serve`: {exec_start!r}")
    verify = shutil.which("systemd-analyze")
    if not problems.check(verify, "systemd-analyze is not installed"):
        return "not verified"
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / path.name
        copy.write_text(re.sub(r"^ExecStart=\S+", f"ExecStart={omega}", text, flags=re.M))
        done = subprocess.run([verify, "verify", "--man=no", str(copy)], capture_output=True, text=True)
        output = (done.stdout + done.stderr).strip()
        problems.check(done.returncode == 0 and not output, f"systemd-analyze verify: rc={done.returncode} {output}")
        # --threshold is in tenths: 30 = exposure 3.0.
        done = subprocess.run([verify, "security", "--offline=yes", "--threshold=30", "--no-pager", str(copy)], capture_output=True, text=True)
        score = re.search(r"Overall exposure level for \S+: ([0-9.]+) (\w+)", done.stdout)
        problems.check(done.returncode == 0 and score, f"systemd-analyze security --offline: rc={done.returncode} {done.stderr.strip()}")
    return f"systemd-analyze verify clean, {len(HARDENING) + 3} hardening checks, exposure {score.group(1) + ' ' + score.group(2) if score else '?'}"


def check_sysusers(path: Path, problems: Problems) -> str:
    entries = [line.split() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
    users = [entry[1] for entry in entries if entry[0] == "u"]
    unit_user = parse_unit((path.parent / "omega.service").read_text()).get("User", [""])[-1]
    problems.check(unit_user in users, f"the unit's user {unit_user!r} is not declared here")
    return f"declares {users}"


# --------------------------------------------------------------------------
# Kubernetes
# --------------------------------------------------------------------------


def load_kube_objects(folder: Path) -> dict[Path, list[dict]]:
    objects: dict[Path, list[dict]] = {}
    for path in sorted(folder.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        objects[path] = [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return objects


def schema_check(path: Path, docs: list[dict], problems: Problems) -> str:
    for doc in docs:
        for version in KUBE_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                location = "/".join(str(p) for p in error.caught_exception.path) if hasattr(error, "caught_exception") else ""
                problems.append(f"{doc.get('kind')}/{doc['metadata'].get('name')} against {version}: {location} {error}")
            except kubernetes_validate.SchemaNotFoundError as error:
                problems.append(f"{doc.get('kind')}: no schema: {error}")
    kinds = ", ".join(f"{d['kind']}/{d['metadata']['name']}" for d in docs)
    return f"schema ({'/'.join(v.rsplit('.', 1)[0] for v in KUBE_VERSIONS)} strict): {kinds}"


def matches(selector: dict, labels: dict) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def cross_check(objects: dict[Path, list[dict]], problems: Problems) -> list[str]:
    everything = [doc for docs in objects.values() for doc in docs]
    by_kind: dict[str, list[dict]] = {}
    for doc in everything:
        by_kind.setdefault(doc["kind"], []).append(doc)
    notes: list[str] = []
    sets = by_kind.get("StatefulSet", [])
    if not problems.check(len(sets) == 1, f"expected one StatefulSet, found {len(sets)}"):
        return notes
    sts = sets[0]
    spec = sts["spec"]
    name, replicas = sts["metadata"]["name"], spec.get("replicas", 1)
    pod = spec["template"]
    labels = pod["metadata"].get("labels", {})
    pod_spec = pod["spec"]
    services = {svc["metadata"]["name"]: svc for svc in by_kind.get("Service", [])}
    problems.check(matches(spec["selector"]["matchLabels"], labels), "StatefulSet selector does not match its pod labels")
    problems.check(replicas >= 3 and replicas % 2 == 1, f"replicas={replicas}: use an odd number of at least 3 voters")
    headless = services.get(spec.get("serviceName"))
    if problems.check(headless, f"serviceName {spec.get('serviceName')!r} names no Service"):
        problems.check(headless["spec"].get("clusterIP") == "None", "the governing Service is not headless (clusterIP: None)")
    problems.check(spec.get("podManagementPolicy") == "Parallel",
                   "podManagementPolicy must be Parallel (after a full restart omega-0 alone has no quorum, so is never ready)")
    pod_names = {f"{name}-{index}" for index in range(replicas)}
    for svc_name, svc in services.items():
        selector = dict(svc["spec"].get("selector", {}))
        pinned = selector.pop("statefulset.kubernetes.io/pod-name", None)
        problems.check(selector and matches(selector, labels), f"Service {svc_name} selector does not match the pod labels")
        if pinned is not None:
            problems.check(pinned in pod_names, f"Service {svc_name} selects pod {pinned}, which the StatefulSet does not have")
    # One Raft Service per member, publishing not-ready pods, on the Raft port over UDP.
    for pod_name in sorted(pod_names):
        svc = services.get(f"{pod_name}-raft")
        if problems.check(svc, f"no Service {pod_name}-raft for member {pod_name}'s stable address"):
            problems.check(svc["spec"].get("publishNotReadyAddresses") is True, f"{pod_name}-raft must publish not-ready addresses")
            problems.check(any(p.get("protocol") == "UDP" and p.get("port") == RAFT_PORT for p in svc["spec"]["ports"]),
                           f"{pod_name}-raft does not carry {RAFT_PORT}/UDP")
    # Containers, probes and security.
    security = pod_spec.get("securityContext", {})
    containers = pod_spec.get("containers", [])
    inits = pod_spec.get("initContainers", [])
    problems.check(inits, "no init container (the join step)")
    for container in inits + containers:
        ctx = {**security, **container.get("securityContext", {})}
        cname = container["name"]
        problems.check(ctx.get("runAsNonRoot") is True, f"{cname}: runAsNonRoot is not true")
        problems.check(ctx.get("runAsUser", 1) != 0, f"{cname}: runAsUser is 0")
        problems.check(ctx.get("allowPrivilegeEscalation") is False, f"{cname}: allowPrivilegeEscalation is not false")
        problems.check("ALL" in ctx.get("capabilities", {}).get("drop", []), f"{cname}: capabilities are not all dropped")
    main = next((c for c in containers if c["name"] == "omega"), None)
    if not problems.check(main, "no container named omega"):
        return notes
    ports = {p.get("name"): p for p in main.get("ports", [])}
    problems.check(ports.get("http", {}).get("containerPort") == HTTP_PORT, f"port http is not {HTTP_PORT}")
    problems.check(ports.get("raft", {}).get("containerPort") == RAFT_PORT and ports["raft"].get("protocol") == "UDP",
                   f"port raft is not {RAFT_PORT}/UDP")

    def probe(kind: str, path_wanted: str) -> None:
        found = main.get(kind)
        if problems.check(found, f"omega: no {kind}"):
            get = found.get("httpGet", {})
            port = get.get("port")
            number = ports.get(port, {}).get("containerPort") if isinstance(port, str) else port
            problems.check(get.get("path") == path_wanted, f"{kind} path is {get.get('path')!r}, expected {path_wanted}")
            problems.check(get.get("path") in served_paths(), f"{kind} path {get.get('path')!r} is not served by the binary")
            problems.check(number == HTTP_PORT, f"{kind} port {port!r} is not the HTTP port {HTTP_PORT}")

    probe("readinessProbe", "/readyz")
    probe("livenessProbe", "/healthz")
    if "startupProbe" in main:
        probe("startupProbe", "/healthz")
    for svc_name, svc in services.items():
        for port in svc["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            problems.check(target in ports or target in {p["containerPort"] for p in ports.values()},
                           f"Service {svc_name} targets port {target!r}, which the pod does not name")
    # Volumes.
    templates = {t["metadata"]["name"] for t in spec.get("volumeClaimTemplates", [])}
    problems.check(templates, "no volumeClaimTemplates")
    env = {e["name"]: e.get("value") for e in main.get("env", [])}
    data_dir = env.get("OMEGA_DATA_DIR", "/var/lib/omega")
    mounts = {m["mountPath"]: m["name"] for m in main.get("volumeMounts", [])}
    problems.check(mounts.get(data_dir) in templates, f"{data_dir} is not mounted from a volumeClaimTemplate")
    volumes = {v["name"]: v for v in pod_spec.get("volumes", [])}
    for container in inits + containers:
        for mount in container.get("volumeMounts", []):
            problems.check(mount["name"] in volumes or mount["name"] in templates, f"{container['name']}: volume {mount['name']} is not defined")
    known = known_env_vars()
    for var in env:
        if var.startswith("OMEGA_"):
            problems.check(var in known, f"omega: {var} is read by nothing")
    # ConfigMap keys used through subPath exist; its config is valid.
    maps = {cm["metadata"]["name"]: cm for cm in by_kind.get("ConfigMap", [])}
    for container in inits + containers:
        for mount in container.get("volumeMounts", []):
            source = volumes.get(mount["name"], {}).get("configMap")
            if source and "subPath" in mount:
                cm = maps.get(source["name"])
                if problems.check(cm, f"ConfigMap {source['name']} is not defined"):
                    problems.check(mount["subPath"] in cm.get("data", {}), f"ConfigMap {source['name']} has no key {mount['subPath']}")
    init_env = {e["name"]: e.get("value") for c in inits for e in c.get("env", [])}
    for var, value in init_env.items():
        if var.startswith("JOIN_VIA"):
            host, _, port = str(value).rpartition(":")
            problems.check(host.split(".")[0] in services, f"{var} {value!r} names no Service")
            problems.check(port == str(RAFT_PORT), f"{var} {value!r} is not the Raft port {RAFT_PORT}")
    # PodDisruptionBudget keeps a quorum.
    pdbs = by_kind.get("PodDisruptionBudget", [])
    if problems.check(pdbs, "no PodDisruptionBudget"):
        pdb = pdbs[0]["spec"]
        problems.check(matches(pdb["selector"]["matchLabels"], labels), "the PodDisruptionBudget selector does not match the pods")
        quorum = replicas // 2 + 1
        if "maxUnavailable" in pdb:
            problems.check(isinstance(pdb["maxUnavailable"], int) and pdb["maxUnavailable"] <= replicas - quorum,
                           f"maxUnavailable={pdb['maxUnavailable']} can break the quorum of {quorum}")
        else:
            problems.check(isinstance(pdb.get("minAvailable"), int) and pdb["minAvailable"] >= quorum, "minAvailable is below the quorum")
    notes.append(f"{name}: {replicas} replicas, headless {spec.get('serviceName')}, probes /readyz /healthz on {HTTP_PORT}, "
                 f"claims {sorted(templates)}, {len(pdbs)} PDB, per-member Raft Services")
    return notes


def check_configmap_contents(docs: list[dict], schema: dict, problems: Problems) -> None:
    for doc in docs:
        if doc["kind"] != "ConfigMap":
            continue
        for key, value in doc.get("data", {}).items():
            if key.endswith(".toml"):
                check_toml(value, schema, problems, f"ConfigMap {doc['metadata']['name']} {key}")
                problems.check("@ADVERTISE@" in value, f"{key}: no @ADVERTISE@ placeholder for the init step")
            elif key.endswith(".sh"):
                done = subprocess.run(["sh", "-n"], input=value, capture_output=True, text=True)
                problems.check(done.returncode == 0, f"{key}: sh -n: {done.stderr.strip()}")


def check_kustomization(path: Path, problems: Problems) -> str:
    data = yaml.safe_load(path.read_text())
    listed = data.get("resources", [])
    present = sorted(p.name for p in path.parent.glob("*.yaml") if p.name != path.name)
    problems.check(sorted(listed) == present, f"resources {sorted(listed)} differ from the manifests {present}")
    kubectl = shutil.which("kubectl")
    note = "resources match the manifests"
    if kubectl:
        done = subprocess.run([kubectl, "kustomize", str(path.parent)], capture_output=True, text=True)
        if problems.check(done.returncode == 0, f"kubectl kustomize: {done.stderr.strip()}"):
            built = [doc for doc in yaml.safe_load_all(done.stdout) if doc]
            note += f"; kubectl kustomize renders {len(built)} objects"
            for doc in built:
                for version in KUBE_VERSIONS[-1:]:
                    try:
                        kubernetes_validate.validate(doc, version, strict=True)
                    except kubernetes_validate.ValidationError as error:
                        problems.append(f"rendered {doc['kind']}/{doc['metadata']['name']}: {error}")
    else:
        note += " (kubectl not installed: kustomize rendering skipped)"
    return note


# --------------------------------------------------------------------------
# Grafana
# --------------------------------------------------------------------------


def check_dashboard(path: Path, problems: Problems) -> str:
    dashboard = json.loads(path.read_text())
    metrics, labels = source_metrics()
    problems.check(metrics, "found no metrics in the Rust sources")
    inputs = [i.get("name") for i in dashboard.get("__inputs", [])]
    problems.check("DS_PROMETHEUS" in inputs, "no DS_PROMETHEUS datasource input")
    expressions: list[str] = []
    panel_count = 0

    def walk(panels: list[dict]) -> None:
        nonlocal panel_count
        for panel in panels:
            panel_count += 1
            walk(panel.get("panels", []))
            if "targets" in panel:
                problems.check(panel.get("datasource", {}).get("uid") == "${DS_PROMETHEUS}",
                               f"panel {panel.get('title')!r} does not use ${{DS_PROMETHEUS}}")
            for target in panel.get("targets", []):
                expressions.append(target.get("expr", ""))
                problems.check(target.get("expr"), f"panel {panel.get('title')!r} has an empty query")

    walk(dashboard.get("panels", []))
    for variable in dashboard.get("templating", {}).get("list", []):
        query = variable.get("query")
        expressions.append(query.get("query", "") if isinstance(query, dict) else str(query or ""))
    used: set[str] = set()
    for expr in expressions:
        problems.check(expr.count("(") == expr.count(")"), f"unbalanced parentheses: {expr}")
        for name in re.findall(r"\b(omega_[a-z0-9_]+)\b", expr):
            base = re.sub(r"_(bucket|sum|count)$", "", name)
            if name in metrics:
                used.add(name)
            elif base != name and metrics.get(base) == "histogram":
                used.add(base)
            else:
                problems.append(f"metric {name} is not recorded anywhere in the Rust sources")
        for group in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr):
            for label in filter(None, (l.strip() for l in group.split(","))):
                problems.check(label in labels | {"instance", "job", "le"}, f"label {label!r} is not one Omega records: {expr}")
        for label in re.findall(r'[{,]\s*([a-z_]+)\s*(?:=~|!~|!=|=)\s*"', expr):
            problems.check(label in labels | {"instance", "job", "le"}, f"label {label!r} is not one Omega records: {expr}")
    unused = sorted(set(metrics) - used)
    return f"{panel_count} panels, {len(used)}/{len(metrics)} source metrics used" + (f" (unused: {', '.join(unused)})" if unused else "")


# --------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--omega", type=Path, help="an existing omega binary, for the unit's ExecStart in systemd-analyze verify")
    args = parser.parse_args()
    omega = args.omega or Path(shutil.which("omega") or "/bin/true")
    if not omega.exists():
        print(f"validate_deploy: --omega {omega} does not exist", file=sys.stderr)
        return 2
    omega = omega.resolve()
    config = config_schema()
    failures = 0
    checked: set[Path] = set()

    def report(path: Path, check) -> None:
        nonlocal failures
        problems = Problems()
        try:
            note = check(problems)
            check_no_secret_on_command_line(path, problems)
        except Exception as error:  # a crash in a check is a failure of that file
            problems.append(f"{type(error).__name__}: {error}")
            note = ""
        checked.add(path)
        rel = path.relative_to(ROOT)
        if problems:
            failures += 1
            print(f"FAIL {rel}")
            for problem in problems:
                print(f"       - {problem}")
        else:
            print(f"ok   {rel}: {note}")

    docker = DEPLOY / "docker"
    report(docker / "Dockerfile", lambda p: check_dockerfile(docker / "Dockerfile", p))
    report(docker / "Dockerfile.dockerignore", lambda p: check_dockerignore(docker / "Dockerfile.dockerignore", p))
    report(docker / "omega-entrypoint.sh", lambda p: check_entrypoint(docker / "omega-entrypoint.sh", p))
    compose = DEPLOY / "compose"
    report(compose / "compose.yaml", lambda p: check_compose(compose / "compose.yaml", p))
    report(compose / "env.example", lambda p: check_env_file(compose / "env.example", p))
    systemd = DEPLOY / "systemd"
    report(systemd / "omega.service", lambda p: check_unit(systemd / "omega.service", omega, p))
    report(systemd / "omega.sysusers", lambda p: check_sysusers(systemd / "omega.sysusers", p))
    report(systemd / "omega.toml", lambda p: (check_toml((systemd / "omega.toml").read_text(), config, p, "omega.toml"), "keys match node/src/config.rs")[1])
    report(systemd / "omega.env.example", lambda p: check_env_file(systemd / "omega.env.example", p))
    kube = DEPLOY / "kubernetes"
    objects = load_kube_objects(kube)
    for path, docs in objects.items():
        def check(p: Problems, path=path, docs=docs) -> str:
            note = schema_check(path, docs, p)
            check_configmap_contents(docs, config, p)
            return note
        report(path, check)
    report(kube / "kustomization.yaml", lambda p: check_kustomization(kube / "kustomization.yaml", p))
    # Cross-references span the manifests: reported against the StatefulSet's file.
    sts_file = next((path for path, docs in objects.items() if any(d["kind"] == "StatefulSet" for d in docs)), kube)
    problems = Problems()
    notes = cross_check(objects, problems)
    rel = sts_file.relative_to(ROOT)
    if problems:
        failures += 1
        print(f"FAIL {rel} (cross-references)")
        for problem in problems:
            print(f"       - {problem}")
    else:
        print(f"ok   {rel} (cross-references): {'; '.join(notes)}")
    for path in sorted((DEPLOY / "grafana").glob("*.json")):
        report(path, lambda p, path=path: check_dashboard(path, p))
    # Every file under deploy/ must have been checked.
    for path in sorted(p for p in DEPLOY.rglob("*") if p.is_file()):
        if path not in checked:
            failures += 1
            print(f"FAIL {path.relative_to(ROOT)}: no check knows this file; add one to scripts/validate_deploy.py")
    print(f"validate_deploy: {len(checked)} files checked, {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
