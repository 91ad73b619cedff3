"""A deployable copy of the stack against the flyctl stand-in, for the deploy-pipeline tests.

`DeployEnv(tmp_path)` copies the stack to tmp/ops, puts a Rails source folder with a
Dockerfile where `project.source` points (tmp/my-app), writes a Dockerfile into every store's
build folder, and creates the environment's apps on the stand-in (the Postgres cluster with
`postgres create`). `.inv(...)` runs a real task in a subprocess; `.fly(...)` runs the stand-in.
The deploy's safe point (flyops/db/safepoint.py, which needs a database and a backup
repository) is `off` unless `safe_point=` says otherwise: tests/tasks/test_safepoint.py has it on.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from flyops.fly.flyctl.runner import FlyRunner
from tests.helpers import REPO, copy_stack, set_safe_point

FLYCTL = REPO / "tests" / "fakefly" / "flyctl"
INV = REPO / ".venv" / "bin" / "inv"
STORES = ("cable", "cache", "kredis", "jobs")
APPS = ("worker", "web")


class DeployEnv:
    def __init__(self, tmp: Path, env: str = "staging", *, seed: bool = True, safe_point: str = "off"):
        self.tmp = Path(tmp)
        self.env = env
        self.root = copy_stack(self.tmp / "ops")
        if safe_point != "auto":
            set_safe_point(self.root, env, safe_point)
        self.home = self.tmp / "fly"
        self.home.mkdir()
        src = self.tmp / "my-app"  # project.source = "../my-app"
        src.mkdir()
        (src / "Dockerfile").write_text("FROM ruby:3.3-slim\n")
        self.base_env = {k: v for k, v in os.environ.items() if not k.startswith(("FLY_", "FAKEFLY_", "FLYOPS_"))}
        self.base_env.update({
            "FLYOPS_ROOT": str(self.root), "FLYCTL": str(FLYCTL), "FLY_API_TOKEN": "test-token",
            "FAKEFLY_HOME": str(self.home), "FLYOPS_OPERATOR": "alice@laptop",
            "FLY_CONFIG_DIR": str(self.home / "dot-fly"),
            "COLUMNS": "200", "NO_COLOR": "1",
        })
        if seed:
            self.seed()

    def app(self, component: str) -> str:
        return f"my-app-{self.env}-{component}"

    def seed(self) -> None:
        self.fly("postgres", "create", "--name", self.app("db"), "--org", "personal", "--region", "fra",
                 "--initial-cluster-size", "1", "--vm-size", "shared-cpu-1x", "--volume-size", "10")
        for c in STORES + APPS:
            self.fly("apps", "create", self.app(c), "--org", "personal", "--json")
        # what `inv up` / `inv keydb.volumes` leave: each store's volume in every region
        regions = ["fra", "iad", "sin"] if self.env == "production" else ["fra"]
        for c in STORES:
            volume = "redis_server" if c == "jobs" else "keydb_server"
            for region in regions:
                self.fly("volumes", "create", volume, "--region", region, "--app", self.app(c), "--yes", "--json")
        (self.home / "argv.log").unlink(missing_ok=True)
        (self.home / "events.jsonl").unlink(missing_ok=True)

    def environ(self, **extra: str) -> dict[str, str]:
        return {**self.base_env, **{k: str(v) for k, v in extra.items()}}

    def runner(self, *, dry: bool = False, **extra: str) -> FlyRunner:
        """A FlyRunner against the stand-in, with `extra` in its environment; what it echoes is
        kept in `.lines`."""
        lines: list[str] = []
        r = FlyRunner(dry=dry, env=self.environ(**extra), echo=lines.append)
        r.lines = lines  # type: ignore[attr-defined]
        return r

    def fly(self, *args: str, check: bool = True, **env: str) -> subprocess.CompletedProcess:
        p = subprocess.run([sys.executable, str(FLYCTL), *args], env=self.environ(**env), text=True,
                           capture_output=True, timeout=60)
        if check and p.returncode != 0:
            raise AssertionError(f"fly {' '.join(args)} -> {p.returncode}: {p.stderr}")
        return p

    def fly_json(self, *args: str):
        return json.loads(self.fly(*args, "--json").stdout)

    def inv(self, *args: str, **env: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(INV), *args], env=self.environ(**env), text=True, capture_output=True,
                              cwd=str(REPO), timeout=300)

    def popen(self, *args: str, **env: str) -> subprocess.Popen:
        return subprocess.Popen([str(INV), *args], env=self.environ(**env), text=True, cwd=str(REPO),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def argv_log(self) -> list[dict]:
        p = self.home / "argv.log"
        return [json.loads(line) for line in p.read_text().splitlines()] if p.exists() else []

    def events(self) -> list[dict]:
        p = self.home / "events.jsonl"
        return [json.loads(line) for line in p.read_text().splitlines()] if p.exists() else []

    def image(self, component: str) -> str:
        """The image the component's machines run (registry/repository:tag)."""
        st = self.fly_json("status", "--app", self.app(component))
        refs = {f"{m['image_ref']['registry']}/{m['image_ref']['repository']}:{m['image_ref']['tag']}"
                for m in st["Machines"]}
        assert len(refs) == 1, refs
        return refs.pop()

    def version(self, component: str) -> int:
        return self.fly_json("status", "--app", self.app(component))["Version"]
