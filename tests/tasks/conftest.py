"""End-to-end task tests: real `inv` processes against a copy of the stack and the flyctl stand-in."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import REPO, copy_stack, write_env

FAKEFLY = REPO / "tests" / "fakefly" / "flyctl"
INV = Path(sys.executable).with_name("inv")

STAGING_VALUES = {
    "RAILS_MASTER_KEY": "rmk-0123456789abcdef",
    "CABLE_STORE_PASSWORD": "cable-pw-Zq9",
    "CACHE_STORE_PASSWORD": "cache-pw-Yx8",
    "KREDIS_STORE_PASSWORD": "kredis-pw-Xw7",
    "JOBS_STORE_PASSWORD": "jobs-pw-Wv6",
    "RESTIC_PASSWORD": "restic-pw-Vu5",
}


@dataclass
class Ops:
    """A repository copy, a stand-in Fly, and a way to run `inv` in it."""

    root: Path
    home: Path

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("FAKEFLY_", "FLY_"))}
        env.update(FLYOPS_ROOT=str(self.root), FLYCTL=str(FAKEFLY), FLY_API_TOKEN="test-token",
                   FAKEFLY_HOME=str(self.home), FLY_CONFIG_DIR=str(self.home / "dot-fly"),
                   NO_COLOR="1", COLUMNS="200")
        env.update(extra)
        return env

    def inv(self, *args: str, input: str | None = None, **extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(INV), "--search-root", str(REPO), *args], capture_output=True, text=True,
                              env=self.env(**extra), input=input, timeout=300)

    def fly(self, *args: str, **extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(FAKEFLY), *args], capture_output=True, text=True, env=self.env(**extra), timeout=60)

    def argv_log(self) -> list[dict]:
        path = self.home / "argv.log"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def mutations(self) -> list[list[str]]:
        return [e["argv"] for e in self.argv_log() if e["mutating"]]

    def changes(self) -> list[list[str]]:
        """Mutating calls, less the audit trail's and the deploy lock's (bookkeeping)."""
        return [m for m in self.mutations() if not any(a.startswith(("my-app-ops-", "my-app-lock-")) for a in m)]


@pytest.fixture
def ops(tmp_path) -> Ops:
    root = copy_stack(tmp_path / "repo")
    write_env(root, "staging", STAGING_VALUES)
    write_env(root, "production", STAGING_VALUES)
    home = tmp_path / "fly"
    home.mkdir()
    return Ops(root=root, home=home)
