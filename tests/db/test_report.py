"""Drill reports: both files are written, the Markdown carries what an auditor asks for."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from flyops.db.report import default_report_base, render_markdown, report_paths, write_reports
from flyops.secret import Secret


def result(**over):
    r = {
        "kind": "dr.drill",
        "env": "staging",
        "target": "local",
        "operator": "ops@bastion",
        "started_at": "2026-08-21T02:00:05Z",
        "finished_at": "2026-08-21T02:00:17Z",
        "backup": {"id": "20260821T0100Z-sched-3f9c", "selection": "latest", "snapshot_time": "2026-08-21T01:00:00Z",
                   "kind": "scheduled", "database": "my_app", "server_version": "15.18", "dump_bytes": 1048576,
                   "sha256": "ab" * 32},
        "fetched": {"sha256": "ab" * 32, "bytes": 1048576},
        "restored": {"target": "scratch cluster 127.0.0.1 (torn down)", "tables": 9, "rows": 9275,
                     "large_objects": 2, "migration_head": "20240410090000"},
        "phases": [{"name": "provision", "seconds": 1.25, "ok": True, "detail": "PostgreSQL 15"},
                   {"name": "fetch", "seconds": 0.4, "ok": True, "detail": "1.0 MiB"},
                   {"name": "restore", "seconds": 2.5, "ok": True, "detail": "pg_restore -j 2"},
                   {"name": "verify", "seconds": 0.7, "ok": True, "detail": ""}],
        "rto": {"measured_s": 4.85, "target_s": 1800.0, "met": True},
        "rpo": {"measured_s": 3605.0, "target_s": 93600.0, "met": True},
        "verification": {"level": "restore", "ok": True, "checks": [
            {"name": "row counts", "ok": True, "detail": "9 tables match | exactly"},
            {"name": "smoke: SELECT count(*) > 0 FROM users", "ok": True, "detail": "true"}]},
        "outcome": "passed",
        "exit_code": 0,
        "error": None,
        "kept": False,
        "tools": {"pg_restore": "15.18", "restic": "0.14.0"},
    }
    r.update(over)
    return r


def test_markdown_has_the_auditor_sections_and_tables():
    md = render_markdown(result())
    assert md.startswith("# Restore drill: staging, 2026-08-21T02:00:05Z")
    assert "**Result: PASSED" in md and "(exit code 0)" in md
    for heading in ("## What was restored", "## Who, when, where", "## Phase timings", "## Recovery objectives",
                    "## Verification checks"):
        assert heading in md
    assert "| Backup | 20260821T0100Z-sched-3f9c |" in md
    assert "| Run by | ops@bastion |" in md
    assert "| provision | 1.2s (1.250 s) | ok | PostgreSQL 15 |" in md
    assert "| RTO (provision .. verified) | 4.8s (4.850 s) | 30m00s (1800.000 s) | met |" in md
    assert "| RPO (drill start - backup snapshot) | 1h00m (3605.000 s) | 26h00m (93600.000 s) | met |" in md
    assert "9 tables match \\| exactly" in md  # pipes in cells are escaped
    assert "| Dump size | 1.0 MiB |" in md


def test_missed_target_and_failure_are_unmistakable():
    md = render_markdown(result(outcome="target_missed", exit_code=6,
                                rto={"measured_s": 4.85, "target_s": 0.001, "met": False}))
    assert "TARGET MISSED" in md and "(exit code 6)" in md
    assert "| 0.0s (0.001 s) | MISSED |" in md
    md = render_markdown(result(outcome="failed", exit_code=3, error="row counts differ", verification={},
                                phases=[], rto={"measured_s": None, "target_s": 1800.0, "met": None}))
    assert "FAILED" in md and "Error: row counts differ" in md
    assert "Verification did not run." in md and "not measured" in md


def test_write_reports_writes_json_and_markdown_side_by_side(tmp_path):
    base = default_report_base(tmp_path, "staging", datetime(2026, 8, 21, 2, 0, 5, tzinfo=UTC))
    assert base == tmp_path / "var" / "drills" / "staging" / "20260821T020005Z"
    j, m = write_reports(result(), base)
    assert (j.name, m.name) == ("20260821T020005Z.json", "20260821T020005Z.md")
    data = json.loads(j.read_text())
    assert data["report_version"] == 1 and data["outcome"] == "passed"
    assert m.read_text().startswith("# Restore drill")
    assert not list(j.parent.glob(".*.tmp"))


def test_a_stray_secret_is_masked_in_json(tmp_path):
    j, m = write_reports(result(extra=Secret("hunter2-very-secret")), tmp_path / "r")
    assert "hunter2-very-secret" not in j.read_text()


def test_report_paths_accepts_a_suffix():
    assert report_paths("out/drill.json") == (Path("out/drill.json"), Path("out/drill.md"))
    assert report_paths("out/drill") == (Path("out/drill.json"), Path("out/drill.md"))
