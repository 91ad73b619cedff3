"""Retention: which complete backups a GFS policy keeps, and `prune` that applies it.

The plan is computed here rather than by `restic forget --keep-*`, because one backup is
two or more snapshots (dump, manifest, verify records) and restic would bucket them one by
one (keeping a day's manifest while dropping that day's dump). The bucketing follows
restic's rules (newest first; a snapshot is kept by a rule when it opens a new day/week/month
bucket and the rule has count left). Extra guards: the newest backup is always kept, never
fewer than `minimum`, pinned backups (including pre-restore) are exempt. The chosen snapshots
are then removed with `restic forget --prune <ids>`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from flyops.db.backup import catalog
from flyops.db.config import DEFAULT_TOOLS, RepoConfig, Retention, Tools
from flyops.db.restic import Repo
from flyops.hosts import Host, LocalHost

ORPHAN_GRACE = timedelta(hours=24)  # an unfinished backup's dump younger than this may still be running

_BUCKETS = {
    "daily": lambda t: t.strftime("%Y-%m-%d"),
    "weekly": lambda t: "{}-W{:02d}".format(*t.isocalendar()[:2]),
    "monthly": lambda t: t.strftime("%Y-%m"),
}


def plan_retention(rows: list[dict], policy: Retention) -> dict[str, dict]:
    """backup id -> {"keep": bool, "reasons": [...]}. `rows` as from list_backups (id, when, pinned)."""
    ordered = sorted(rows, key=lambda r: r["id"], reverse=True)
    decisions = {r["id"]: {"keep": False, "reasons": []} for r in ordered}
    left = {"daily": policy.daily, "weekly": policy.weekly, "monthly": policy.monthly}
    last_bucket: dict[str, str | None] = dict.fromkeys(left)
    rotating = [r for r in ordered if not r["pinned"]]
    for r in ordered:
        if r["pinned"]:
            decisions[r["id"]] = {"keep": True, "reasons": ["pinned"]}
    for i, r in enumerate(rotating):
        d = decisions[r["id"]]
        if i == 0:
            d["reasons"].append("newest")
        when = r["when"] or datetime.now(UTC)
        for rule, key in _BUCKETS.items():
            b = key(when)
            if left[rule] > 0 and b != last_bucket[rule]:
                last_bucket[rule] = b
                left[rule] -= 1
                d["reasons"].append(rule)
        if i < policy.minimum and not d["reasons"]:
            d["reasons"].append("minimum")
        d["keep"] = bool(d["reasons"])
    return decisions


def prune(repo_config: RepoConfig, env: str, policy: Retention, *, confirm: bool = False, host: Host | None = None,
          tools: Tools = DEFAULT_TOOLS, now: datetime | None = None) -> dict:
    """Plan (and with confirm=True apply) retention. Returns {"keep": [ids], "drop": [ids],
    "orphans": [ids], "applied": bool}. Dry run unless confirmed."""
    from flyops.db.backup import _row

    repo = Repo(repo_config, host or LocalHost(), tools)
    now = now or datetime.now(UTC)
    cat = catalog(repo, env)
    complete = {bid: e for bid, e in cat.items() if e["dump"] and e["manifest"]}
    rows = [_row(bid, e) for bid, e in complete.items()]
    decisions = plan_retention(rows, policy)
    drop = sorted(bid for bid, d in decisions.items() if not d["keep"])
    orphans = sorted(
        bid for bid, e in cat.items()
        if bid not in complete and all(_snap_time(s) < now - ORPHAN_GRACE for s in _snaps(e))
    )
    result = {"keep": sorted((b for b in decisions if decisions[b]["keep"]), reverse=True), "drop": drop,
              "orphans": orphans, "decisions": decisions, "applied": False}
    if confirm and (drop or orphans):
        ids = [s["id"] for bid in drop + orphans for s in _snaps(cat[bid])]
        repo.forget(ids, prune=True)
        result["applied"] = True
    return result


def _snaps(entry: dict) -> list[dict]:
    return [s for s in (entry["dump"], entry["manifest"], *entry["verify"]) if s]


def _snap_time(s: dict) -> datetime:
    return datetime.fromisoformat(s["time"][:19]).replace(tzinfo=UTC)
