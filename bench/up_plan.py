"""Benchmark (not a test): `inv up --env production --yes` and `inv plan --env production` against
the flyctl stand-in with FAKEFLY_LATENCY_MS=300. Records flyctl call counts, wall time and the
sum of per-call durations (what a strictly sequential run would have cost) to bench/results/up_plan.md.

    .venv/bin/python bench/up_plan.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.helpers import copy_stack, write_env  # noqa: E402
from tests.tasks.conftest import STAGING_VALUES  # noqa: E402

LATENCY_MS = 300


def run(root: Path, home: Path, *args: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLY_", "FAKEFLY_"))}
    env.update(FLYOPS_ROOT=str(root), FLYCTL=str(REPO / "tests/fakefly/flyctl"), FLY_API_TOKEN="bench",
               FAKEFLY_HOME=str(home), FLY_CONFIG_DIR=str(home / "dot-fly"), FAKEFLY_LATENCY_MS=str(LATENCY_MS), NO_COLOR="1")
    log = home / "argv.log"
    before = len(log.read_text().splitlines()) if log.exists() else 0
    start = time.monotonic()
    p = subprocess.run([str(REPO / ".venv/bin/inv"), "--search-root", str(REPO), *args], env=env,
                       capture_output=True, text=True)
    wall = time.monotonic() - start
    entries = [json.loads(line) for line in log.read_text().splitlines()[before:]]
    return {"cmd": "inv " + " ".join(args), "rc": p.returncode, "wall": wall, "calls": len(entries),
            "mutating": sum(e["mutating"] for e in entries), "sum": sum(e.get("duration") or 0 for e in entries)}


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="flyops-bench-") as tmp:
        root = copy_stack(Path(tmp) / "repo")
        write_env(root, "production", STAGING_VALUES)
        home = Path(tmp) / "fly"
        home.mkdir()
        rows = [
            run(root, home, "plan", "--env", "production"),
            run(root, home, "up", "--env", "production", "--yes", "--no-deploy"),
            run(root, home, "up", "--env", "production", "--yes", "--no-deploy"),
            run(root, home, "plan", "--env", "production"),
        ]
    labels = ["plan, empty org", "up, from nothing (no deploy)", "up, second run (converged)", "plan, after up"]
    lines = [
        "# `inv up` / `inv plan` for production against the stand-in",
        "",
        f"`bench/up_plan.py`, FAKEFLY_LATENCY_MS={LATENCY_MS} (every flyctl call sleeps 300 ms first), "
        "production = 3 regions, 4 stores, web + worker, a Postgres cluster. `up` runs with `--no-deploy` "
        "(the deploy is the deploy task's benchmark). Sum of call durations = what the same calls cost run one "
        "after another; wall < sum because reads and independent mutations run concurrently.",
        "",
        "| run | exit | flyctl calls | of which mutating | wall time | sum of call durations |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for label, r in zip(labels, rows, strict=True):
        lines.append(f"| {label} | {r['rc']} | {r['calls']} | {r['mutating']} | {r['wall']:.1f} s | {r['sum']:.1f} s |")
    lines += ["", f"Recorded {time.strftime('%Y-%m-%d')} on {os.uname().nodename.split('.')[0]} ({os.cpu_count()} CPUs).", ""]
    out = REPO / "bench/results/up_plan.md"
    out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
