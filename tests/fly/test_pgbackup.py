"""flyops/fly/pgbackup.py: exact argv, flexctl's outputs, the plan for database.pitr, freshness."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from flyops.db.platform import check_platform_fresh
from flyops.db.verify import VerifyResult
from flyops.fly import pgbackup as pb
from flyops.fly.pitr import RestoreWindow

AT = datetime(2026, 8, 21, 2, 0, 5, tzinfo=UTC)


def test_argv():
    assert pb.backup_enable("db").args == ("postgres", "backup", "enable", "--app", "db")
    assert pb.backup_enable("db").writes_fly_config and pb.backup_enable("db").mutating
    assert pb.flex_backup_list("db").args == ("postgres", "backup", "list", "--app", "db")  # no --json: flyctl has none
    assert pb.backup_config_update("db", {"full_backup_frequency": "12h", "archive_timeout": "30s"}).args == (
        "postgres", "backup", "config", "update", "--app", "db", "--archive-timeout", "30s",
        "--full-backup-frequency", "12h")
    assert pb.backup_restore("db", "new", at=AT).args == (
        "postgres", "backup", "restore", "new", "--app", "db", "--restore-target-time", "2026-08-21T02:00:05Z")
    assert pb.backup_restore("db", "new", target_name="20260821T020005", inclusive=False).args[-2:] == (
        "20260821T020005", "--restore-target-inclusive=false")
    assert pb.backup_restore("db", "new").args == ("postgres", "backup", "restore", "new", "--app", "db")
    with pytest.raises(ValueError):
        pb.backup_restore("db", "new", at=AT.replace(tzinfo=None))


def test_flexctl_outputs():
    table = """+-----------------+-------+--------+--------------------------+--------------------------+
| ID/NAME         | ALIAS | STATUS | END TIME                 | BEGIN WAL                |
+-----------------+-------+--------+--------------------------+--------------------------+
| 20260820T020000 |       | DONE   | Thu Aug 20 02:00:09 2026 | 000000010000000000000006 |
| 20260821T020000 | pre   | FAILED | Fri Aug 21 02:00:01 2026 | 000000010000000000000009 |
+-----------------+-------+--------+--------------------------+--------------------------+
"""
    rows = pb.parse_backup_list(table)
    assert [(r.id, r.name, r.status) for r in rows] == [("20260820T020000", "", "DONE"), ("20260821T020000", "pre", "FAILED")]
    assert rows[0].end_time == datetime(2026, 8, 20, 2, 0, 9, tzinfo=UTC)
    assert pb.parse_barman_time("Tue Dec  1 12:24:12 2026") == datetime(2026, 12, 1, 12, 24, 12, tzinfo=UTC)
    assert pb.parse_backup_list("No backups found\n") == []
    cfg = pb.parse_config_show("  ArchiveTimeout = 60s\n  RecoveryWindow = RECOVERY WINDOW OF 14 DAYS\n"
                               "  FullBackupFrequency = 24h\n  MinimumRedundancy = 3\n")
    assert cfg == {"archive_timeout": "60s", "recovery_window": "14d", "full_backup_frequency": "24h",
                   "minimum_redundancy": "3"}
    assert pb.config_changes({"archive_timeout": "1m", "recovery_window": "7d"}, {"archive_timeout": "60s",
                                                                                    "recovery_window": "14d"}) == {
        "recovery_window": "7d"}
    out = "Postgres cluster new created\n  Username:    postgres\n  Password:    s3cr3t\n"
    assert pb.parse_restore_output(out, "new").reveal() == "s3cr3t"
    assert pb.parse_restore_output("Creating app...\n==> Monitoring health checks\n", "new") is None


class _Db:
    pitr = True
    pitr_archive_timeout, pitr_recovery_window, pitr_full_backup_frequency = "60s", "14d", "24h"


def test_plan_enables_then_configures_then_keeps():
    new = pb.plan_flex_backups("db", _Db, None, creating=True)
    assert [s.action for s in new] == ["change"] and new[0].calls[0].args[-2:] == ("--recovery-window", "14d")
    off = pb.plan_flex_backups("db", _Db, pb.LiveBackups(), creating=False)
    assert [s.action for s in off] == ["enable", "change"]
    assert [c.args[:3] for c in off[0].calls] == [("postgres", "backup", "enable"), ("secrets", "deploy", "--app")]
    staged = pb.plan_flex_backups("db", _Db, pb.LiveBackups(enabled=True), creating=False)
    assert [s.action for s in staged] == ["deploy", "change"]
    live = pb.LiveBackups(enabled=True, active=True, config={"archive_timeout": "1m0s", "recovery_window": "14d",
                                                                "full_backup_frequency": "24h"})
    kept = pb.plan_flex_backups("db", _Db, live, creating=False)
    assert [s.action for s in kept] == ["keep"] and not kept[0].calls


def test_fresh_fails_on_a_stale_window():
    now = AT
    good = RestoreWindow("flex", "db", now - timedelta(days=3), now - timedelta(seconds=70), now - timedelta(hours=3))
    r = VerifyResult(level="fresh", env="staging")
    assert check_platform_fresh(r, good, max_lag=300, max_full_age=86400 + 300, now=now) and r.ok
    stale = RestoreWindow("flex", "db", good.earliest, now - timedelta(minutes=20), good.last_full)
    r = VerifyResult(level="fresh", env="staging")
    assert not check_platform_fresh(r, stale, max_lag=300, max_full_age=86700, now=now)
    assert "OVER the 5m" in r.failures()[0].detail and "WAL archiving has stopped" in r.failures()[0].detail
    old_full = RestoreWindow("flex", "db", good.earliest, good.latest, now - timedelta(hours=30))
    r = VerifyResult(level="fresh", env="staging")
    assert not check_platform_fresh(r, old_full, max_lag=300, max_full_age=86700, now=now)
    assert "no full backup within the configured frequency" in r.failures()[0].detail
    none = RestoreWindow("flex", "db", None, None, None)
    r = VerifyResult(level="fresh", env="staging")
    assert not check_platform_fresh(r, none, max_lag=300, max_full_age=86700, now=now) and len(r.failures()) == 2


def test_stack_keys_are_checked(tmp_path):
    from flyops.errors import BadInput
    from flyops.stack.model import load_stack
    from tests.helpers import copy_stack

    root = copy_stack(tmp_path / "repo")
    overlay = root / "fly" / "staging.toml"
    overlay.write_text(overlay.read_text() + "\n[database]\npitr = true\n")
    with pytest.raises(BadInput, match="at least 512 MB"):
        load_stack(root, "staging")
    overlay.write_text(overlay.read_text().replace("pitr = true", 'pitr = true\nvm_size = "shared-cpu-2x"\n'
                                                   'pitr_full_backup_frequency = "30m"'))
    with pytest.raises(BadInput, match="at least 1h"):
        load_stack(root, "staging")
    overlay.write_text(overlay.read_text().replace('"30m"', '"12h"'))
    assert load_stack(root, "staging").database.pitr
