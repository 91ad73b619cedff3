"""Helpers for tests that drive the stand-in through subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

FLYCTL = str(Path(__file__).resolve().parent.parent / "flyctl")


@dataclass
class Result:
    rc: int
    out: str
    err: str

    def json(self):
        return json.loads(self.out)


class FakeFly:
    def __init__(self, home, token: str | None = "test-token", **env):
        self.home = Path(home)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("FLY_", "FAKEFLY_"))}
        self.env["FAKEFLY_HOME"] = str(home)
        self.env["FLY_CONFIG_DIR"] = str(Path(home) / "dot-fly")  # flyctl's config.yml, never ~/.fly
        if token:
            self.env["FLY_API_TOKEN"] = token
        self.env.update({k: str(v) for k, v in env.items()})

    def run(self, *args, input: str | None = None, env: dict | None = None, cwd=None, timeout=30) -> Result:
        e = dict(self.env)
        for k, v in (env or {}).items():
            if v is None:
                e.pop(k, None)
            else:
                e[k] = str(v)
        p = subprocess.run([sys.executable, FLYCTL, *map(str, args)], input=input if input is not None else "",
                           capture_output=True, text=True, env=e, cwd=cwd, timeout=timeout)
        return Result(p.returncode, p.stdout, p.stderr)

    def popen(self, *args, env: dict | None = None, **kw) -> subprocess.Popen:
        e = dict(self.env)
        e.update({k: str(v) for k, v in (env or {}).items()})
        return subprocess.Popen([sys.executable, FLYCTL, *map(str, args)], env=e, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)

    def argv_log(self) -> list[dict]:
        p = self.home / "argv.log"
        return [json.loads(line) for line in p.read_text().splitlines()] if p.exists() else []

    def events(self) -> list[dict]:
        p = self.home / "events.jsonl"
        return [json.loads(line) for line in p.read_text().splitlines()] if p.exists() else []
