"""The demo: the whole job on a new machine with nothing configured. A throwaway PostgreSQL is
seeded with a sample Rails database, backed up into a throwaway restic repository, and drilled
into a second throwaway server; the drill's report stays in var/drills/demo/."""

from __future__ import annotations

import contextlib
import secrets
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from flyops.db.backup import backup
from flyops.db.config import BackupSource, RepoConfig
from flyops.db.drill import DrillResult, LocalTarget, run_drill
from flyops.db.sample import SAMPLE_SMOKE_QUERIES, seed_sample
from flyops.db.scratch import ScratchCluster
from flyops.procs import sigterm_as_interrupt
from flyops.secret import Secret
from flyops.units import parse_duration


def run_demo(root: Path, *, keep_repo: bool = False, say: Callable[[str], None] = print) -> DrillResult:
    base = root / "var" / "demo"
    base.mkdir(parents=True, exist_ok=True)
    repo_dir = Path(tempfile.mkdtemp(prefix="repo-", dir=base))
    repo = RepoConfig(location=str(repo_dir), password=Secret(secrets.token_urlsafe(24)))
    with sigterm_as_interrupt(), contextlib.ExitStack() as cleanup:
        if not keep_repo:
            cleanup.callback(shutil.rmtree, repo_dir, ignore_errors=True)
        say("demo: starting a throwaway PostgreSQL and seeding a sample Rails database …")
        source = cleanup.enter_context(ScratchCluster())
        source.start()
        source.psql("CREATE DATABASE app_production")
        counts = seed_sample(source.url("app_production"))
        say(f"demo: seeded {sum(counts.values())} rows in {len(counts)} tables; taking db.backup …")
        manifest = backup(BackupSource(url=source.url("app_production"), env="demo"), repo, reason="demo",
                          init=True)  # its own throwaway repository
        say(f"demo: backup {manifest['id']} stored ({manifest['bytes']} bytes, sha256 {manifest['sha256'][:12]}…);"
            " running dr.drill against a second throwaway server …")
        return run_drill(
            env="demo", repo_config=repo, backup="latest", target=LocalTarget(), rto=parse_duration("10m"),
            rpo=parse_duration("26h"), smoke_queries=SAMPLE_SMOKE_QUERIES, root=root,
        )
