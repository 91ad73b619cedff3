"""Retention: the GFS policy for complete backups, and which backups it keeps.

One model, read from the stack (`[backup.retention]`) and taken by the backup core. The plan is
computed here rather than by `restic forget --keep-*`, because one backup is two or more
snapshots (dump, manifest, verify records) and restic would bucket them one by one (keeping a
day's manifest while dropping that day's dump). The bucketing follows restic's rules
(internal/restic/snapshot_policy.go: newest first; a snapshot is kept by a rule when it opens a
new day/week/month bucket and the rule has count left). Extra guards: the newest backup is
always kept, never fewer than `minimum`, pinned backups (including pre-restore) are exempt for
`pinned_days`. `flyops.db.prune` applies the plan.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pydantic import BaseModel, ConfigDict, Field


class Retention(BaseModel):
    """GFS policy. Pinned (incl. pre-restore) backups are exempt for `pinned_days` after they
    were taken (None: for ever), then rotate like any other."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    daily: int = Field(default=7, ge=0)
    weekly: int = Field(default=4, ge=0)
    monthly: int = Field(default=6, ge=0)
    minimum: int = Field(default=3, ge=1)  # never fewer complete backups; the newest is always kept
    pinned_days: int | None = Field(default=90, ge=1)


_BUCKETS = {
    "daily": lambda t: t.strftime("%Y-%m-%d"),
    "weekly": lambda t: "{}-W{:02d}".format(*t.isocalendar()[:2]),
    "monthly": lambda t: t.strftime("%Y-%m"),
}


def pin_holds(row: dict, policy: Retention, now: datetime) -> bool:
    """A pinned backup is exempt from rotation for `policy.pinned_days` after it was taken."""
    if not row["pinned"]:
        return False
    if policy.pinned_days is None or row["when"] is None:
        return True
    return row["when"] > now - timedelta(days=policy.pinned_days)


def plan_retention(rows: list[dict], policy: Retention, *, now: datetime | None = None) -> dict[str, dict]:
    """backup id -> {"keep": bool, "reasons": [...]}. `rows` as from list_backups (id, when, pinned)."""
    now = now or datetime.now(UTC)
    ordered = sorted(rows, key=lambda r: r["id"], reverse=True)
    decisions = {r["id"]: {"keep": False, "reasons": []} for r in ordered}
    left = {"daily": policy.daily, "weekly": policy.weekly, "monthly": policy.monthly}
    last_bucket: dict[str, str | None] = dict.fromkeys(left)
    rotating = [r for r in ordered if not pin_holds(r, policy, now)]
    for r in ordered:
        if pin_holds(r, policy, now):
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


#: what `project_expiry` assumes about the future when db.list says when a backup will go
EXPIRY_ASSUMPTION = "one backup a day from now on, each followed by a prune"


def project_expiry(rows: list[dict], policy: Retention, *, now: datetime, every: timedelta = timedelta(days=1),
                   horizon: timedelta = timedelta(days=1000)) -> dict[str, datetime | None]:
    """backup id -> the first prune that would drop it, if a backup is taken every `every` from
    `now` on and each is followed by a prune (a simulation with `plan_retention`, so the answer
    follows the same buckets, and a pin lapses after `pinned_days`). `now` for a backup the
    next prune drops; None for those still kept after `horizon` (or pinned for ever)."""
    plan = plan_retention(rows, policy, now=now)
    expiry: dict[str, datetime | None] = {r["id"]: None if plan[r["id"]]["keep"] else now for r in rows}
    pending = {r["id"] for r in rows if plan[r["id"]]["keep"]}
    kept = [r for r in rows if plan[r["id"]]["keep"]]
    t, n = now, 0
    while pending and t < now + horizon:
        t, n = t + every, n + 1
        kept.append({"id": f"{t.strftime('%Y%m%dT%H%M%SZ')}-future-{n:05d}", "when": t, "pinned": False})
        plan = plan_retention(kept, policy, now=t)
        for bid in [b for b in pending if not plan[b]["keep"]]:
            expiry[bid] = t
            pending.discard(bid)
        kept = [r for r in kept if plan[r["id"]]["keep"]]  # pruned: gone from the repository
    return expiry
