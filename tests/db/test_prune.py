"""Retention: GFS buckets over complete backups; pinned and newest always kept; dry run by default."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from flyops.db.backup import backup
from flyops.db.catalog import list_backups, pin
from flyops.db.prune import prune
from flyops.db.retention import Retention, plan_retention, project_expiry
from tests.db.conftest import source


def _rows(days: list[int], pinned: set[int] = frozenset()) -> list[dict]:
    base = datetime(2026, 11, 26, 2, 0, tzinfo=UTC)
    return [{"id": f"{(base - timedelta(days=d)).strftime('%Y%m%dT%H%M%SZ')}-sched-{d:04x}",
             "when": base - timedelta(days=d), "pinned": d in pinned} for d in days]


def test_plan_keeps_daily_weekly_monthly_buckets():
    rows = _rows(list(range(0, 60)))
    plan = plan_retention(rows, Retention(daily=3, weekly=2, monthly=2, minimum=1))
    kept = sorted((r["when"].date().isoformat() for r in rows if plan[r["id"]]["keep"]), reverse=True)
    # 3 newest days; the week of 2026-11-23 is already kept via 11-24..26, so the 2nd week is 11-22;
    # months: November (already kept by daily) and October's newest (10-31)
    assert kept == ["2026-11-26", "2026-11-25", "2026-11-24", "2026-11-22", "2026-10-31"]
    assert "newest" in plan[rows[0]["id"]]["reasons"]


def test_plan_never_drops_pinned_or_goes_below_minimum():
    rows = _rows([0, 0, 1, 2, 40], pinned={40})
    plan = plan_retention(rows, Retention(daily=1, weekly=0, monthly=0, minimum=3))
    assert plan[rows[4]["id"]] == {"keep": True, "reasons": ["pinned"]}
    assert sum(plan[r["id"]]["keep"] for r in rows if not r["pinned"]) == 3


NOW = datetime(2026, 11, 26, 3, 0, tzinfo=UTC)  # an hour after the newest of _rows()


def test_expiry_of_a_daily_only_policy_is_its_day_plus_the_daily_count():
    rows = _rows([0, 1, 2])
    exp = project_expiry(rows, Retention(daily=3, weekly=0, monthly=0, minimum=1), now=NOW)
    # with a backup each day, the one from 11-24 loses its slot when the third newer day arrives
    assert {r["when"].date().isoformat(): exp[r["id"]].date().isoformat() for r in rows} == {
        "2026-11-26": "2026-11-29", "2026-11-25": "2026-11-28", "2026-11-24": "2026-11-27"}


def test_expiry_follows_the_longest_rule_that_keeps_a_backup():
    rows = _rows(list(range(0, 60)))
    policy = Retention(daily=3, weekly=2, monthly=2, minimum=1)
    plan, exp = plan_retention(rows, policy), project_expiry(rows, policy, now=NOW)
    by_day = {r["when"].date().isoformat(): r["id"] for r in rows}
    assert exp[by_day["2026-11-01"]] == NOW  # not kept now: the next prune drops it
    # 10-31 holds October's monthly slot; with November and December taking the two slots, it goes
    # with the first December backup
    assert exp[by_day["2026-10-31"]].date().isoformat() == "2026-12-01"
    # 11-22 holds a weekly slot (week 47): it goes when the second newer week (week 49) starts
    assert exp[by_day["2026-11-22"]].date().isoformat() == "2026-11-30"
    for bid, d in plan.items():  # kept now <=> expires later than now
        assert (exp[bid] is None or exp[bid] > NOW) == d["keep"]


def test_a_pin_lapses_after_pinned_days_then_the_backup_rotates():
    rows = _rows([0, 1, 100, 120], pinned={1, 100})  # pinned 1 day ago and 100 days ago
    policy = Retention(daily=1, weekly=0, monthly=0, minimum=1, pinned_days=90)
    plan = plan_retention(rows, policy, now=NOW)
    assert plan[rows[1]["id"]] == {"keep": True, "reasons": ["pinned"]}
    assert not plan[rows[2]["id"]]["keep"] and not plan[rows[3]["id"]]["keep"]  # the lapsed pin rotates
    exp = project_expiry(rows, policy, now=NOW)
    assert exp[rows[1]["id"]].date().isoformat() == "2027-02-23"  # taken 11-25, + 90 days, then no rule keeps it
    assert exp[rows[2]["id"]] == NOW
    forever = project_expiry(rows, Retention(daily=1, weekly=0, monthly=0, minimum=1, pinned_days=None), now=NOW)
    assert forever[rows[1]["id"]] is None and forever[rows[2]["id"]] is None


def test_pinned_for_ever_and_long_rules_hit_the_horizon():
    rows = _rows([0, 5, 26], pinned={5})  # 11-26, 11-21 (pinned), 10-31 (October's last)
    exp = project_expiry(rows, Retention(daily=1, weekly=0, monthly=100, minimum=1, pinned_days=None), now=NOW)
    assert exp[rows[1]["id"]] is None  # pinned for ever
    assert exp[rows[2]["id"]] is None  # October's monthly slot, kept 100 months: beyond the 1000-day horizon
    # 11-26 holds November's slot only until a newer November backup (tomorrow's) takes it
    assert exp[rows[0]["id"]].date().isoformat() == "2026-11-27"


def test_prune_is_a_dry_run_until_confirmed(pg, small_db, repo, lock_dir):
    ids = [backup(source(pg, small_db), repo, kind="scheduled", lock_dir=lock_dir)["id"] for _ in range(4)]
    pin(repo, "staging", ids[0])
    policy = Retention(daily=1, weekly=0, monthly=0, minimum=1)  # same day: only the newest by rule

    plan = prune(repo, "staging", policy)
    assert not plan["applied"] and sorted(plan["drop"]) == sorted(ids[1:3])
    assert len(list_backups(repo, "staging")) == 4

    rows = list_backups(repo, "staging", retention=policy)
    assert {r["id"]: r["retention"]["keep"] for r in rows} == {ids[0]: True, ids[1]: False, ids[2]: False, ids[3]: True}

    done = prune(repo, "staging", policy, confirm=True)
    assert done["applied"]
    left = {r["id"]: r for r in list_backups(repo, "staging")}
    assert set(left) == {ids[0], ids[3]} and left[ids[0]]["pinned"]
