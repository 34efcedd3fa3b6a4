#!/usr/bin/env python3
"""Runs a deployment of deploy/ as its orchestrator would, without Docker or
Kubernetes, and checks that the nodes form a cluster that is ready.

    deploy_local.py --omega BIN compose      # deploy/compose/compose.yaml
    deploy_local.py --omega BIN kubernetes   # deploy/kubernetes/ StatefulSet

What a container would do is done here with the same files and settings:
- the image: the `omega` binary and deploy/docker/omega-entrypoint.sh
  installed under a scratch root's /usr/local/bin (as the Dockerfile's COPY
  and RUN steps do), the final stage's ENV and WORKDIR, and its user (when
  this runs as root, the processes drop to that uid/gid);
- each container's environment, arguments and volumes (folders of the
  scratch root; absolute paths in scripts and files are moved with them);
- its network: each node gets its own loopback address (Linux routes all of
  127/8 to `lo`), and names that would resolve to it (compose's fixed
  172.28.0.x addresses, Kubernetes' per-pod Services) are moved there;
- the start-up order: compose starts omega-1, waits for its healthcheck,
  takes a join token for each other node with `omega cluster token` in
  omega-1's environment (`docker compose exec`), then starts the others.
  Kubernetes starts every pod at once (`podManagementPolicy: Parallel`):
  each runs the ConfigMap's prepare.sh as its init container, then the image
  with the StatefulSet's environment; omega-1.. wait in prepare.sh until the
  operator puts their tokens in Secret omega-join, taken from omega-0 with
  `kubectl exec omega-0 -- omega cluster token`.

It passes when every node's readiness answers 200 and the cluster has all
its voters. Exit status 0 on success, 1 with the reason otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml
from dockerfile_parse import DockerfileParser

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "deploy/compose/compose.yaml"
ENV_EXAMPLE = ROOT / "deploy/compose/env.example"
KUBERNETES = ROOT / "deploy/kubernetes"
DOCKERFILE = ROOT / "deploy/docker/Dockerfile"
ENTRYPOINT = ROOT / "deploy/docker/omega-entrypoint.sh"
HTTP_PORT = 8420


def fail(message: str) -> None:
    raise SystemExit(f"deploy_local: {message}")


def image_settings() -> dict:
    """The final stage's ENV, WORKDIR and USER."""
    parser = DockerfileParser(fileobj=open(DOCKERFILE, "rb"))
    final: list[dict] = []
    for item in parser.structure:
        if item["instruction"] == "FROM":
            final = []
        else:
            final.append(item)

    def last(instruction: str) -> str | None:
        return next((i["value"] for i in reversed(final) if i["instruction"] == instruction), None)

    return {"env": parser.envs, "workdir": last("WORKDIR") or "/", "user": last("USER") or "root"}


def install_image(root: Path, omega: Path) -> Path:
    """The image's /usr/local/bin under `root`; returns it."""
    os.chmod(root, 0o755)
    bin_dir = root / "usr/local/bin"
    bin_dir.mkdir(parents=True)
    shutil.copy(omega, bin_dir / "omega")
    shutil.copy(ENTRYPOINT, bin_dir / "omega-entrypoint")
    for path in (bin_dir / "omega", bin_dir / "omega-entrypoint"):
        os.chmod(path, 0o755)
    return bin_dir


def short_film(path: Path) -> None:
    """A two-second film: the user's media."""
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=320x180:rate=10:duration=2",
         "-c:v", "libx264", "-preset", "ultrafast", str(path)],
        check=True,
    )


class Container:
    """One container: its processes run in `root` with its volumes mapped."""

    def __init__(self, name: str, root: Path, scratch: Path, address: str, user: str | None):
        self.name = name
        self.root = root
        self.scratch = scratch
        self.address = address
        self.http = f"{address}:{HTTP_PORT}"
        self.volumes: dict[str, Path] = {}
        self.env: dict[str, str] = {"PATH": f"{scratch}/usr/local/bin:/usr/bin:/bin", "HOME": str(root)}
        self.workdir: Path = root
        self.uid = self.gid = None
        if user and user.split(":")[0].isdigit():
            self.uid, self.gid = (int(part) for part in (user.split(":") + user.split(":"))[:2])
        self.process: subprocess.Popen | None = None

    def mount(self, target: str, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.volumes[target] = folder

    def path_of(self, container_path: str) -> Path | str:
        """A container path in this container's volumes, or the text as it is."""
        for target in sorted(self.volumes, key=len, reverse=True):
            if container_path == target or container_path.startswith(target + "/"):
                return self.volumes[target] / container_path[len(target):].lstrip("/")
        return container_path

    def moved(self, text: str) -> str:
        """`text` with every mounted path moved to its folder."""
        if not self.volumes:
            return text
        # One pass, longest first: a moved path is not moved again.
        targets = sorted(self.volumes, key=len, reverse=True)
        pattern = "|".join(re.escape(target) for target in targets)
        return re.sub(f"(?<![\\w/])({pattern})(?=[/\\s\"'$]|$)", lambda m: str(self.volumes[m.group(1)]), text)

    def as_user(self):
        if os.geteuid() != 0 or self.uid is None:
            return None
        uid, gid = self.uid, self.gid

        def drop() -> None:
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)

        return drop

    def own_volumes(self) -> None:
        if os.geteuid() == 0 and self.uid is not None:
            for folder in self.volumes.values():
                for path in [folder, *folder.rglob("*")]:
                    os.chown(path, self.uid, self.gid)

    def start(self, argv: list[str], env: dict[str, str] | None = None) -> None:
        self.own_volumes()
        log = open(self.scratch / f"{self.name}.log", "ab")
        self.process = subprocess.Popen(
            argv, env={**self.env, **(env or {})}, cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT,
            preexec_fn=self.as_user(),
        )

    def run(self, argv: list[str], env: dict[str, str] | None = None) -> int:
        """Runs `argv` to its end (an init container); its exit status."""
        self.start(argv, env)
        assert self.process is not None
        return self.process.wait()

    def log(self) -> str:
        path = self.scratch / f"{self.name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def exec(self, *args: str) -> str:
        """`docker compose exec -T` / `kubectl exec`: `args` in this container."""
        done = subprocess.run(args, env=self.env, cwd=self.workdir, capture_output=True, text=True, preexec_fn=self.as_user())
        if done.returncode != 0:
            fail(f"{self.name}: {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout

    def answers(self, path: str) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.http}{path}", timeout=2) as answer:
                return answer.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()


def wait_for(what: str, within: float, done, containers: list[Container]) -> None:
    deadline = time.monotonic() + within
    while not done():
        for container in containers:
            process = container.process
            if process and process.poll() is not None and process.returncode != 0:
                fail(f"{container.name} exited ({process.returncode}) while waiting for {what}:\n{container.log()}")
        if time.monotonic() > deadline:
            fail(f"gave up waiting for {what}:\n" + "\n".join(f"--- {c.name}\n{c.log()}" for c in containers))
        time.sleep(0.2)


def check_cluster(first: Container, voters_wanted: int) -> dict:
    status = json.loads(first.exec("omega", "cluster", "status", "--json"))
    voters = [member["id"] for member in status["members"] if member["role"] == "voter"]
    if len(voters) != voters_wanted or status["leader"] is None:
        fail(f"expected {voters_wanted} voters and a leader: {status}")
    return status


def who(container: Container) -> str:
    return f"uid {container.uid}" if os.geteuid() == 0 and container.uid is not None else f"uid {os.geteuid()}"


# --------------------------------------------------------------------------
# Compose
# --------------------------------------------------------------------------


def env_file(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            values[key.strip()] = value.strip()
    return values


def interpolate(text: str, values: dict[str, str]) -> str:
    """Compose's `${VAR}`, `${VAR:-default}` and `${VAR:?error}`."""

    def one(match: re.Match) -> str:
        name, op, arg = match.group(1), match.group(2), match.group(3) or ""
        value = values.get(name, "")
        if op == ":-":
            return value or arg
        if op == ":?" and not value:
            fail(f"{name}: {arg}")
        return value

    return re.sub(r"\$\{(\w+)(?:(:-|:\?)([^}]*))?\}", one, text)


def compose_loopback(text: str) -> str:
    """The compose network's addresses, moved into 127/8."""
    return re.sub(r"\b172\.(\d+\.\d+\.\d+)\b", r"127.\1", text)


def compose_container(name: str, service: dict, image: dict, scratch: Path, values: dict[str, str]) -> Container:
    address = compose_loopback(service["networks"]["omega"]["ipv4_address"])
    container = Container(name, scratch / name, scratch, address, service.get("user") or image["user"])
    for volume in service.get("volumes", []):
        source, target = interpolate(volume, values).split(":")[:2]
        container.mount(target, scratch / "volumes" / source.strip("./").replace("/", "-"))
    container.env.update(image["env"])
    for key, value in (service.get("environment") or {}).items():
        container.env[key] = compose_loopback(interpolate(str(value), values))
    # Each node binds its own address, as in its own network namespace.
    container.env["OMEGA_LISTEN"] = container.http
    container.env["OMEGA_DATA_DIR"] = str(container.path_of(container.env["OMEGA_DATA_DIR"]))
    container.workdir = Path(container.path_of(image["workdir"]))
    container.workdir.mkdir(parents=True, exist_ok=True)
    return container


def run_compose(omega: Path, scratch: Path) -> str:
    compose = yaml.safe_load(COMPOSE.read_text())
    image = image_settings()
    install_image(scratch, omega)
    # The user's .env: env.example with the password filled in, as the
    # instructions at the top of compose.yaml ask.
    values = env_file(ENV_EXAMPLE)
    values["OMEGA_ADMIN_PASSWORD"] = "a compose password"
    services = {name: svc for name, svc in compose["services"].items() if name.startswith("omega-")}
    containers: list[Container] = []

    def start(name: str) -> Container:
        service = services[name]
        container = compose_container(name, service, image, scratch, values)
        containers.append(container)
        args = [str(container.path_of(arg)) for arg in service.get("command", [])]
        container.start([str(scratch / "usr/local/bin/omega-entrypoint"), *args])
        return container

    first_service = services["omega-1"]
    film_folder = compose_container("omega-1", first_service, image, scratch, values).path_of("/media")
    short_film(Path(film_folder) / "Test Film (2024)" / "Test Film (2024).mkv")
    try:
        first = start("omega-1")
        health = first_service["healthcheck"]["test"][1:]
        health = [compose_loopback(part).replace(f"127.0.0.1:{HTTP_PORT}", first.http) for part in health]
        wait_for("omega-1's healthcheck", 60, lambda: subprocess.run(health, capture_output=True).returncode == 0, containers)
        for joiner in ("omega-2", "omega-3"):
            number = joiner.rsplit("-", 1)[1]
            values[f"OMEGA_JOIN_TOKEN_{number}"] = first.exec("omega", "cluster", "token", "--ttl", "1h").strip()
        for joiner in ("omega-2", "omega-3"):
            start(joiner)
        for container in containers:
            wait_for(f"{container.name}'s /readyz", 60, lambda c=container: c.answers("/readyz"), containers)
        status = check_cluster(first, 3)
        return f"compose: omega-1, omega-2, omega-3 ready as {who(first)}; leader {status['leader']}"
    finally:
        for container in reversed(containers):
            container.stop()


# --------------------------------------------------------------------------
# Kubernetes
# --------------------------------------------------------------------------


def kube_objects() -> dict[tuple[str, str], dict]:
    objects = {}
    for path in sorted(KUBERNETES.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and "kind" in doc and doc["kind"] != "Kustomization":
                objects[(doc["kind"], doc["metadata"]["name"])] = doc
    return objects


def kube_env(container: dict, pod: str, addresses: dict[str, str]) -> dict[str, str]:
    """A container's environment, with the per-pod Services' names moved
    to the addresses they would resolve to (`omega-N-raft` → pod N)."""
    env = {}
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = str(item["value"])
        elif item.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.name":
            env[item["name"]] = pod
        elif item.get("valueFrom", {}).get("secretKeyRef", {}).get("name") == "omega-admin":
            key = item["valueFrom"]["secretKeyRef"]["key"]
            env[item["name"]] = {"username": "admin", "password": "a kubernetes password"}[key]
    return {key: re.sub(r"\b(omega-\d+)-raft\b", lambda m: addresses.get(m.group(1), m.group(0)), value) for key, value in env.items()}


def run_kubernetes(omega: Path, scratch: Path) -> str:
    objects = kube_objects()
    statefulset = objects[("StatefulSet", "omega")]
    config_map = objects[("ConfigMap", "omega")]["data"]
    spec = statefulset["spec"]
    pod_spec = spec["template"]["spec"]
    if spec.get("podManagementPolicy") != "Parallel":
        fail("the walk below assumes podManagementPolicy: Parallel")
    security = pod_spec.get("securityContext", {})
    user = f"{security.get('runAsUser')}:{security.get('runAsGroup')}" if security.get("runAsUser") else None
    init = next(c for c in pod_spec["initContainers"] if c["name"] == "prepare")
    main = next(c for c in pod_spec["containers"] if c["name"] == "omega")
    image = image_settings()
    install_image(scratch, omega)
    replicas = spec["replicas"]
    addresses = {f"omega-{n}": f"127.30.0.{10 + n}" for n in range(replicas)}
    # Cluster DNS for the per-pod Services: `getent hosts omega-N-raft`.
    fake_dns = scratch / "dns"
    fake_dns.mkdir()
    getent = fake_dns / "getent"
    lines = "\n".join(f'  {pod}-raft) echo "{ip} {pod}-raft" ;;' for pod, ip in addresses.items())
    getent.write_text(f'#!/bin/sh\n[ "$1" = hosts ] || exit 2\ncase "$2" in\n{lines}\n  *) exit 2 ;;\nesac\n')
    getent.chmod(0o755)
    secret = scratch / "volumes/secret-omega-join"
    secret.mkdir(parents=True)
    os.chmod(secret, 0o755)
    media = scratch / "volumes/omega-media"
    short_film(media / "Test Film (2024)" / "Test Film (2024).mkv")
    pods: list[Container] = []
    inits: list[Container] = []
    for pod, address in addresses.items():
        container = Container(pod, scratch / pod, scratch, address, user)
        container.mount("/var/lib/omega", scratch / pod / "data")
        container.mount("/run/omega", scratch / pod / "run")
        container.mount("/tmp", scratch / pod / "tmp")
        container.mount("/media", media)
        container.mount("/etc/omega/join", secret)
        etc = scratch / pod / "etc-omega"
        etc.mkdir(parents=True)
        # The node listens on the pod's own address (its network namespace).
        (etc / "omega.toml").write_text(config_map["omega.toml"].replace("0.0.0.0", address))
        container.mount("/etc/omega", etc)
        (etc / "prepare.sh").write_text(container.moved(config_map["prepare.sh"]))
        container.env.update({key: value.replace("0.0.0.0", address) for key, value in image["env"].items()})
        container.workdir = Path(container.path_of(image["workdir"]))
        pods.append(container)
        # The init container: the same volumes, its own environment.
        prepare = Container(f"{pod}-prepare", container.root, scratch, address, user)
        prepare.volumes = container.volumes
        prepare.env["PATH"] = f"{fake_dns}:{prepare.env['PATH']}"
        prepare.env.update({k: container.moved(v) for k, v in kube_env(init, pod, addresses).items()})
        argv = [container.moved(part) for part in init["command"]]
        prepare.start(argv)
        inits.append(prepare)
    try:
        # omega-0's init ends at once (it creates the cluster); its node starts.
        first_pod, first_init = pods[0], inits[0]
        wait_for("omega-0's init container", 30, lambda: first_init.process.poll() is not None, [first_init])
        if first_init.process.returncode != 0:
            fail(f"omega-0's init container failed:\n{first_init.log()}")

        def start_main(container: Container) -> None:
            env = {k: container.moved(v) for k, v in kube_env(main, container.name, addresses).items()}
            container.start([str(scratch / "usr/local/bin/omega-entrypoint"), *main.get("args", [])], env)

        start_main(first_pod)
        wait_for("omega-0's startup probe (/healthz)", 60, lambda: first_pod.answers("/healthz"), pods)
        # The operator: a token for each other pod, into Secret omega-join.
        first_pod.env.update({k: first_pod.moved(v) for k, v in kube_env(main, first_pod.name, addresses).items()})
        for pod in pods[1:]:
            token = first_pod.exec("omega", "cluster", "token", "--ttl", "1h").strip()
            (secret / pod.name).write_text(token + "\n")
            os.chmod(secret / pod.name, 0o444)
        for pod, prepare in zip(pods[1:], inits[1:]):
            wait_for(f"{pod.name}'s init container", 30, lambda p=prepare: p.process.poll() is not None, [prepare])
            if prepare.process.returncode != 0:
                fail(f"{pod.name}'s init container failed:\n{prepare.log()}")
            start_main(pod)
        for pod in pods:
            wait_for(f"{pod.name}'s readiness probe (/readyz)", 60, lambda p=pod: p.answers("/readyz"), pods)
        status = check_cluster(first_pod, replicas)
        return f"kubernetes: {', '.join(p.name for p in pods)} ready as {who(first_pod)}; leader {status['leader']}"
    finally:
        for container in reversed(pods + inits):
            container.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--omega", type=Path, required=True, help="the omega binary the image would hold")
    parser.add_argument("orchestrator", choices=["compose", "kubernetes"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix=f"omega-{args.orchestrator}-") as scratch:
        run = run_compose if args.orchestrator == "compose" else run_kubernetes
        print(f"deploy_local: {run(args.omega.resolve(), Path(scratch))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
