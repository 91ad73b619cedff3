"""The platform's point-in-time layer next to the logical backups: which `PlatformBackups` a stack
has, its restore window as `db.list` shows it, and the `fresh` checks `db.verify` adds.

Flex (`database.source = "fly"`, `database.pitr = true`): `flyops.fly.pgbackup.FlexBackups`,
the latest restorable time read from the cluster through `fly proxy`. Managed Postgres plugs in
at `platform_backups` (flyops/fly/mpg.py `MpgBackups`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flyops.db.verify import VerifyResult
from flyops.fly.pitr import PlatformBackups, RestoreWindow
from flyops.units import format_duration, parse_duration


def platform_backups(stack: Any, envfile: Any, runner: Any) -> PlatformBackups | None:
    """The stack's point-in-time layer, or None when it has none."""
    db = stack.database
    if db.source == "fly" and getattr(db, "pitr", False):
        from flyops.db.settings import database_url
        from flyops.fly.pgbackup import FlexBackups

        stack.require_fly()
        return FlexBackups(app=stack.app_name("db"), run=runner.run, spawn=runner.start_proxy,
                           source_url=lambda: database_url(stack, envfile, runner), mask=runner.add_masks)
    if db.source == "mpg":  # Managed Postgres always keeps point-in-time backups
        from flyops.fly.mpg import MpgBackups

        stack.require_fly()
        return MpgBackups.for_stack(stack, runner)
    return None


def _iso(d: datetime | None) -> str | None:
    return d.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if d else None


def window_dict(w: RestoreWindow) -> dict:
    return {"product": w.product, "cluster": w.cluster, "earliest": _iso(w.earliest), "latest": _iso(w.latest),
            "last_full": _iso(w.last_full)}


def window_line(w: RestoreWindow) -> str:
    return (f"platform point-in-time ({w.product} {w.cluster}): restorable {_iso(w.earliest) or '?'} .. "
            f"{_iso(w.latest) or '?'}, last full backup {_iso(w.last_full) or 'none'}")


def freshness_limits(database: Any) -> tuple[float, float]:
    """(max lag of the latest restorable time, max age of the last full backup) in seconds: the
    full backup is due every `pitr_full_backup_frequency`, and may take up to `pitr_max_lag` more."""
    from flyops.units import go_duration_seconds

    lag = parse_duration(database.pitr_max_lag)
    return lag, go_duration_seconds(database.pitr_full_backup_frequency) + lag


def check_platform_fresh(result: VerifyResult, w: RestoreWindow, *, max_lag: float, max_full_age: float,
                         now: datetime | None = None) -> bool:
    """Adds `platform latest` and `platform full backup` checks; True when both pass."""
    now = now or datetime.now(UTC)
    what = f"{w.product} {w.cluster}"
    if w.latest is None:
        result.add("platform latest", False, f"{what}: the latest restorable time is unknown (no WAL segment archived)")
        ok_latest = False
    else:
        age = (now - w.latest).total_seconds()
        ok_latest = age <= max_lag
        result.add("platform latest", ok_latest,
                   f"{what}: latest restorable time {_iso(w.latest)} is {format_duration(max(age, 0))} old "
                   + (f"(under the {format_duration(max_lag)} limit)" if ok_latest else
                      f"(OVER the {format_duration(max_lag)} limit: WAL archiving has stopped or lags; "
                      f"see pg_stat_archiver on the cluster and `fly logs -a {w.cluster}`)"))
    if w.last_full is None:
        result.add("platform full backup", False, f"{what}: no complete full backup at all")
        return False
    age = (now - w.last_full).total_seconds()
    ok_full = age <= max_full_age
    result.add("platform full backup", ok_full,
               f"{what}: last full backup {_iso(w.last_full)} is {format_duration(age)} old "
               + ("(within the configured frequency)" if ok_full else
                  f"(OVER {format_duration(max_full_age)}: no full backup within the configured frequency)"))
    return ok_latest and ok_full
