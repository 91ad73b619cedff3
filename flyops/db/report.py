"""Drill reports: the JSON a machine reads and the Markdown a person hands an auditor.

Pure functions over the drill's result dict (see `flyops.db.drill.DrillResult.to_dict`), plus
`write_reports`, which writes both files next to each other under
`var/drills/<env>/<timestamp>.{json,md}` (or a path the operator gives). Nothing here may
print a secret: the result dict never holds one (URLs are masked before they get there),
and the JSON is written with `RedactingEncoder` as a second guard.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flyops.secret import RedactingEncoder
from flyops.units import format_bytes, format_duration, human_duration

REPORT_VERSION = 1


def timestamp_slug(when: datetime) -> str:
    """2026-08-21T02:00:05Z -> 20260821T020005Z (sortable, safe in file names)."""
    return when.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def default_report_base(root: Path, env: str, started_at: datetime) -> Path:
    """<root>/var/drills/<env>/<timestamp> (without suffix)."""
    return Path(root) / "var" / "drills" / env / timestamp_slug(started_at)


def report_paths(base: Path | str) -> tuple[Path, Path]:
    """The (json, md) pair for a base path; a given `.json`/`.md` suffix is replaced."""
    base = Path(base)
    if base.suffix in (".json", ".md"):
        base = base.with_suffix("")
    return base.with_name(base.name + ".json"), base.with_name(base.name + ".md")


def write_reports(result: dict[str, Any], base: Path | str) -> tuple[Path, Path]:
    """Write `<base>.json` and `<base>.md` (atomically: temp file + rename). Returns both paths."""
    json_path, md_path = report_paths(base)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(json_path, json.dumps({"report_version": REPORT_VERSION, **result}, indent=2,
                                        sort_keys=False, cls=RedactingEncoder) + "\n")
    _write_atomic(md_path, render_markdown(result))
    return json_path, md_path


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


# -- Markdown ----------------------------------------------------------------------------------

_OUTCOME_LINE = {
    "passed": "PASSED: the backup was restored and verified, within the RTO and RPO targets.",
    "target_missed": "TARGET MISSED: the backup was restored and verified, but a recovery target was missed.",
    "failed": "FAILED: the backup could not be restored or did not verify.",
    "interrupted": "INTERRUPTED: the drill was stopped before it finished; nothing was proven.",
}


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def _table(headers: list[str], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(headers) + " |", "| " + " | ".join("---" for _ in headers) + " |"]
    out += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return out


def _secs(value: float | None) -> str:
    if value is None:
        return "n/a"
    return human_duration(value, precision=3) if value >= 60 else f"{format_duration(value)} ({value:.3f} s)"


def _target_row(name: str, block: dict[str, Any] | None) -> list[Any]:
    block = block or {}
    measured, target, met = block.get("measured_s"), block.get("target_s"), block.get("met")
    verdict = "no target" if target is None else ("met" if met else "MISSED")
    if measured is None:
        verdict = "not measured"
    return [name, _secs(measured), _secs(target) if target is not None else "none", verdict]


def render_markdown(r: dict[str, Any]) -> str:
    """The auditor's page: what was restored, from which backup, when, by whom, how long, verdict.
    A report of both layers (`layers`: the logical drill's, the point-in-time drill's) is one page
    per layer under one verdict."""
    if r.get("layers"):
        head = [f"# Restore drills: {r.get('env', '?')}, {r.get('started_at', '?')}", "",
                f"**Overall: {_OUTCOME_LINE.get(r.get('outcome'), r.get('outcome'))}** (exit code {r.get('exit_code')})",
                ""]
        return "\n".join(head) + "\n" + "\n".join(render_markdown(layer).replace("\n# ", "\n## ", 1)
                                                  for layer in r["layers"])
    backup = r.get("backup") or {}
    outcome = r.get("outcome", "failed")
    lines = [
        f"# Restore drill: {r.get('env', '?')}, {r.get('started_at', '?')}",
        "",
        f"**Result: {_OUTCOME_LINE.get(outcome, outcome)}** (exit code {r.get('exit_code', '?')})",
        "",
    ]
    if r.get("error"):
        lines += [f"Error: {r['error']}", ""]

    lines += ["## What was restored", ""]
    lines += _table(["", ""], [
        ["Environment", r.get("env")],
        ["Backup", backup.get("id")],
        ["Chosen as", backup.get("selection")],
        ["Backup taken (snapshot time)", backup.get("snapshot_time")],
        ["Backup kind", backup.get("kind")],
        ["Source database", backup.get("database")],
        ["Server version at backup", backup.get("server_version")],
        ["Dump size", format_bytes(backup["dump_bytes"]) if backup.get("dump_bytes") is not None else None],
        ["Dump SHA-256 (manifest)", backup.get("sha256")],
        ["Dump SHA-256 (fetched)", (r.get("fetched") or {}).get("sha256")],
        ["Restored into", (r.get("restored") or {}).get("target")],
        ["Tables / rows restored", _restored_counts(r.get("restored") or {})],
        ["Large objects restored", (r.get("restored") or {}).get("large_objects")],
        ["schema_migrations head", (r.get("restored") or {}).get("migration_head")],
    ])
    lines += ["", "## Who, when, where", ""]
    lines += _table(["", ""], [
        ["Run by", r.get("operator")],
        ["Drill started (UTC)", r.get("started_at")],
        ["Drill finished (UTC)", r.get("finished_at")],
        ["Scratch target", r.get("target")],
        ["Kept after the drill", "yes (--keep)" if r.get("kept") else "no, torn down"],
        ["Tool versions", ", ".join(f"{k} {v}" for k, v in (r.get("tools") or {}).items()) or None],
    ])

    pitr = r.get("pitr")
    if pitr:
        window = pitr.get("window") or {}
        lines += ["", "## Platform point-in-time restore", ""]
        lines += _table(["", ""], [
            ["Product / cluster", f"{pitr.get('product')} {pitr.get('cluster')}"],
            ["Restore window", f"{window.get('earliest')} .. {window.get('latest')}"],
            ["Last full backup", window.get("last_full")],
            ["Requested time", pitr.get("requested_at") or "latest"],
            ["Restored into (new cluster, destroyed after)", pitr.get("restored_cluster")],
            ["Compared with logical backups", ", ".join(pitr.get("compared_with") or []) or "none bracket that time"],
            ["Newest transaction present", pitr.get("newest_commit")],
            ["RPO read with", pitr.get("rpo_source")],
        ])
    lines += ["", "## Phase timings", ""]
    phase_rows = [[p.get("name"), _secs(p.get("seconds")), "ok" if p.get("ok") else "FAILED", p.get("detail", "")]
                  for p in r.get("phases") or []]
    lines += _table(["Phase", "Duration", "Status", "Detail"], phase_rows or [["(none)", "", "", ""]])

    lines += ["", "## Recovery objectives", ""]
    lines += _table(["Objective", "Measured", "Target", "Verdict"], [
        _target_row("RTO (restore requested .. verified)" if pitr else "RTO (provision .. verified)", r.get("rto")),
        _target_row("RPO (requested time - newest transaction present)" if pitr
                    else "RPO (drill start - backup snapshot)", r.get("rpo")),
    ])

    verification = r.get("verification") or {}
    lines += ["", "## Verification checks", ""]
    if verification:
        lines.append(f"Level `{verification.get('level')}`: {'passed' if verification.get('ok') else 'FAILED'}.")
        lines.append("")
        rows = [[c.get("name"), "pass" if c.get("ok") else "FAIL", c.get("detail", "")]
                for c in verification.get("checks") or []]
        lines += _table(["Check", "Result", "Detail"], rows or [["(none run)", "", ""]])
    else:
        lines.append("Verification did not run.")

    lines += ["", "---", f"Machine-readable copy: the `.json` file next to this one (report version {REPORT_VERSION}).", ""]
    return "\n".join(lines)


def _restored_counts(restored: dict[str, Any]) -> str | None:
    if restored.get("tables") is None:
        return None
    return f"{restored.get('tables')} tables, {restored.get('rows')} rows"
