#!/usr/bin/env python3
"""Runs deploy/compose/compose.yaml's three nodes as the image would, without
Docker, and checks that they form a cluster that is ready.

What a container would do is done here with the same files and settings:
- the image: the `omega` binary and deploy/docker/omega-entrypoint.sh
  installed under a scratch root's /usr/local/bin (as the Dockerfile's COPY
  and RUN steps do), the final stage's ENV, WORKDIR on the data volume, and
  its USER (when this runs as root: the processes drop to that uid/gid);
- each service: its `environment` (with `${VAR:-default}` taken from
  deploy/compose/env.example, filled in as the compose instructions say),
  its `command` as the entrypoint's arguments, its volumes as folders of
  the scratch root, its fixed network address moved into loopback
  (172.28.0.11 becomes 127.28.0.11: Linux routes all of 127/8 to `lo`);
- the order: omega-1 first until its healthcheck (the compose file's own
  `test` command) passes, then a token for each joiner from
  `omega cluster token` run in omega-1's environment (as `docker compose
  exec` would), then omega-2 and omega-3.

It passes when every node's /readyz answers 200 and the cluster has three
voters. Exit status 0 on success, 1 with the reason otherwise.
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
DOCKERFILE = ROOT / "deploy/docker/Dockerfile"
ENTRYPOINT = ROOT / "deploy/docker/omega-entrypoint.sh"


def fail(message: str) -> None:
    raise SystemExit(f"compose_local: {message}")


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


def loopback(text: str) -> str:
    """The compose network's addresses, moved into 127/8."""
    return re.sub(r"\b172\.(\d+\.\d+\.\d+)\b", r"127.\1", text)


class Node:
    def __init__(self, name: str, service: dict, image: dict, root: Path, values: dict[str, str]):
        self.name = name
        self.root = root
        self.address = loopback(service["networks"]["omega"]["ipv4_address"])
        self.http = f"{self.address}:8420"
        self.volumes: dict[str, Path] = {}
        for volume in service.get("volumes", []):
            source, target = interpolate(volume, values).split(":")[:2]
            folder = root / "volumes" / source.strip("./").replace("/", "-")
            folder.mkdir(parents=True, exist_ok=True)
            self.volumes[target] = folder
        self.env = {"PATH": f"{root}/usr/local/bin:/usr/bin:/bin", "HOME": str(root)}
        for key, value in image["env"].items():
            self.env[key] = value
        for key, value in (service.get("environment") or {}).items():
            self.env[key] = loopback(interpolate(str(value), values))
        # The image listens on 0.0.0.0:8420 in its own network namespace;
        # here the three share one, so each binds its own address.
        self.env["OMEGA_LISTEN"] = self.http
        self.env["OMEGA_DATA_DIR"] = str(self.path_of(self.env["OMEGA_DATA_DIR"]))
        self.args = [str(self.path_of(arg)) for arg in service.get("command", [])]
        self.workdir = self.path_of(image["workdir"])
        self.healthcheck = [loopback(part).replace("127.0.0.1:8420", self.http) for part in service["healthcheck"]["test"][1:]]
        user = service.get("user") or image["user"]
        self.uid, self.gid = (int(part) for part in user.split(":")) if user[0].isdigit() else (None, None)
        self.process: subprocess.Popen | None = None

    def path_of(self, container_path: str) -> Path | str:
        """A container path in this node's volumes, or the text unchanged."""
        for target, folder in self.volumes.items():
            if container_path == target or container_path.startswith(target + "/"):
                return folder / container_path[len(target) :].lstrip("/")
        return container_path

    def as_image_user(self):
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

    def start(self) -> None:
        self.own_volumes()
        log = open(self.root / f"{self.name}.log", "wb")
        self.process = subprocess.Popen(
            [str(self.root / "usr/local/bin/omega-entrypoint"), *self.args],
            env=self.env,
            cwd=self.workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=self.as_image_user(),
        )

    def log(self) -> str:
        return (self.root / f"{self.name}.log").read_text(errors="replace")

    def exec(self, *args: str) -> str:
        """`docker compose exec -T NAME ARGS`."""
        done = subprocess.run(args, env=self.env, cwd=self.workdir, capture_output=True, text=True, preexec_fn=self.as_image_user())
        if done.returncode != 0:
            fail(f"{self.name}: {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout

    def healthy(self) -> bool:
        return subprocess.run(self.healthcheck, capture_output=True).returncode == 0

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.http}/readyz", timeout=2) as answer:
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


def wait_for(what: str, within: float, done, nodes: list[Node]) -> None:
    deadline = time.monotonic() + within
    while not done():
        for node in nodes:
            if node.process and node.process.poll() is not None:
                fail(f"{node.name} exited ({node.process.returncode}) while waiting for {what}:\n{node.log()}")
        if time.monotonic() > deadline:
            fail(f"gave up waiting for {what}:\n" + "\n".join(f"--- {n.name}\n{n.log()}" for n in nodes))
        time.sleep(0.2)


def image_settings() -> dict:
    parser = DockerfileParser(fileobj=open(DOCKERFILE, "rb"))
    final: list[dict] = []
    for item in parser.structure:
        if item["instruction"] == "FROM":
            final = []
        else:
            final.append(item)
    last = lambda instruction: next((i["value"] for i in reversed(final) if i["instruction"] == instruction), None)
    return {"env": parser.envs, "workdir": last("WORKDIR") or "/", "user": last("USER") or "root"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--omega", type=Path, required=True, help="the omega binary the image would hold")
    args = parser.parse_args()
    compose = yaml.safe_load(COMPOSE.read_text())
    image = image_settings()
    # The user's .env: env.example with the password filled in, as the
    # instructions at the top of compose.yaml ask.
    values = env_file(ENV_EXAMPLE)
    values["OMEGA_ADMIN_PASSWORD"] = "a compose password"
    with tempfile.TemporaryDirectory(prefix="omega-compose-") as scratch:
        root = Path(scratch)
        os.chmod(root, 0o755)
        bin_dir = root / "usr/local/bin"
        bin_dir.mkdir(parents=True)
        shutil.copy(args.omega, bin_dir / "omega")
        shutil.copy(ENTRYPOINT, bin_dir / "omega-entrypoint")
        for path in (bin_dir / "omega", bin_dir / "omega-entrypoint"):
            os.chmod(path, 0o755)
        services = {name: svc for name, svc in compose["services"].items() if name.startswith("omega-")}
        first = Node("omega-1", services["omega-1"], image, root, values)
        # The user's media folder, with one short film in it.
        film = first.path_of("/media") / "Test Film (2024)" / "Test Film (2024).mkv"
        film.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=320x180:rate=10:duration=2",
             "-c:v", "libx264", "-preset", "ultrafast", str(film)],
            check=True,
        )
        nodes = [first]
        try:
            first.start()
            wait_for("omega-1's healthcheck", 60, first.healthy, nodes)
            for joiner in ("omega-2", "omega-3"):
                number = joiner.rsplit("-", 1)[1]
                values[f"OMEGA_JOIN_TOKEN_{number}"] = first.exec("omega", "cluster", "token", "--ttl", "1h").strip()
            for joiner in ("omega-2", "omega-3"):
                node = Node(joiner, services[joiner], image, root, values)
                nodes.append(node)
                node.start()
            for node in nodes:
                wait_for(f"{node.name}'s /readyz", 60, node.ready, nodes)
            status = json.loads(first.exec("omega", "cluster", "status", "--json"))
            voters = [member["id"] for member in status["members"] if member["role"] == "voter"]
            if len(voters) != 3 or status["leader"] is None:
                fail(f"expected three voters and a leader: {status}")
            user = f"uid {first.uid}" if os.geteuid() == 0 else f"uid {os.geteuid()} (not root: the image's user is not taken)"
            print(f"compose_local: {', '.join(n.name for n in nodes)} ready as {user}; leader {status['leader']}, voters {voters}")
        finally:
            for node in reversed(nodes):
                node.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
