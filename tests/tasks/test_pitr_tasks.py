"""`database.pitr = true` end to end against the stand-in: up enables and configures it, plan shows it."""

from __future__ import annotations

import json

from tests.tasks.conftest import Ops


def _pitr_stack(ops: Ops, extra: str = "") -> None:
    overlay = ops.root / "fly" / "staging.toml"
    overlay.write_text(overlay.read_text() + '\n[database]\npitr = true\nvm_size = "shared-cpu-2x"\n'
                       'pitr_recovery_window = "14d"\n' + extra)


def _backup_calls(ops: Ops) -> list[list[str]]:
    return [m for m in ops.mutations() if m[:2] == ["postgres", "backup"] or "--enable-backups" in m]


def test_up_creates_the_cluster_with_backups_and_converges(ops):
    _pitr_stack(ops)
    r = ops.inv("up", "--env", "staging", "--yes", "--no-deploy")
    assert r.returncode == 0, r.stdout + r.stderr
    calls = _backup_calls(ops)
    assert any("--enable-backups" in c and c[:2] == ["postgres", "create"] for c in calls)
    assert ["postgres", "backup", "config", "update", "--app", "my-app-staging-db", "--recovery-window", "14d"] in calls
    before = len(ops.mutations())
    r = ops.inv("plan", "--env", "staging", "--json")
    rows = [row for row in json.loads(r.stdout)["rows"] if row["kind"] == "backups"]
    assert rows and all(row["action"] == "keep" for row in rows), rows
    r = ops.inv("up", "--env", "staging", "--yes", "--no-deploy")
    assert r.returncode == 0 and not _backup_calls(ops)[len(calls):]
    assert len([m for m in ops.mutations()[before:] if m[:2] == ["postgres", "backup"]]) == 0


def test_up_enables_backups_on_an_existing_cluster(ops):
    assert ops.inv("up", "--env", "staging", "--yes", "--no-deploy").returncode == 0  # no pitr yet
    # the cluster runs on shared-cpu-1x (256 MB); the stack now says 2x, which `up` does not resize:
    # `backup enable` is flyctl's to refuse (hasRequiredMemoryForBackup)
    _pitr_stack(ops)
    r = ops.inv("plan", "--env", "staging", "--json")
    rows = {row["target"]: row for row in json.loads(r.stdout)["rows"] if row["kind"] == "backups"}
    assert rows["S3_ARCHIVE_CONFIG"]["action"] == "create" and r.returncode == 7
    r = ops.inv("up", "--env", "staging", "--yes", "--no-deploy")
    assert r.returncode == 1 and "512MB" in r.stdout + r.stderr  # flyctl refuses; nothing was changed
