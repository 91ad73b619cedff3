"""`prune`: apply the retention plan (`flyops.db.retention`) to a repository.

The snapshots of the backups the plan drops are removed with `restic forget --prune <ids>`,
together with the dumps of unfinished backups older than ORPHAN_GRACE (a killed backup's data,
reclaimable here), restic's stale locks, and (in a folder repository) the temporary files of
uploads killed mid-write, last written before TEMP_GRACE, which restic itself never removes
(`Repo.temp_leftovers`).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from flyops.db.catalog import backup_row, catalog
from flyops.db.config import DEFAULT_TOOLS, RepoConfig, Tools
from flyops.db.hosts import Host, LocalHost
from flyops.db.restic import Repo
from flyops.db.retention import Retention, plan_retention

ORPHAN_GRACE = timedelta(hours=24)  # an unfinished backup's dump younger than this may still be running
#: a restic temporary file not written for this long has no writer: restic writes a file whole
#: (16 MiB packs by default) and renames it right after syncing it. The same age after which
#: restic calls a lock stale (internal/repository/lock_file.go, staleLockTimeout: 30 minutes).
TEMP_GRACE = timedelta(minutes=30)


def prune(repo_config: RepoConfig, env: str, policy: Retention, *, confirm: bool = False, host: Host | None = None,
          tools: Tools = DEFAULT_TOOLS, now: datetime | None = None) -> dict:
    """Plan (and with confirm=True apply) retention. Returns {"keep": [ids], "drop": [ids],
    "orphans": [ids], "locks": [snapshot ids], "forget": [snapshot ids], "temp_files":
    [{"path", "bytes"}], "applied": bool}. Dry run unless confirmed.

    Applying always ends with `restic prune`, even when no snapshot is to be forgotten: a
    failed or killed upload leaves packs that no snapshot references (restic writes data
    before the snapshot naming it), and only a prune gives that space back. The snapshots of
    released and stale backup locks (`repolock`) are forgotten on the way, after `restic unlock`
    has removed restic's own stale locks (a killed restic leaves one, which blocks forget/prune).
    A folder repository's temporary files left by a restic killed while writing one go last:
    those found when applying (the plan lists those it sees)."""
    from flyops.db.repolock import stale_lock_ids

    repo = Repo(repo_config, host or LocalHost(), tools)
    repo.require()
    now = now or datetime.now(UTC)
    cat = catalog(repo, env)
    complete = {bid: e for bid, e in cat.items() if e["dump"] and e["manifest"]}
    rows = [backup_row(bid, e) for bid, e in complete.items()]
    decisions = plan_retention(rows, policy, now=now)
    drop = sorted(bid for bid, d in decisions.items() if not d["keep"])
    orphans = sorted(
        bid for bid, e in cat.items()
        if bid not in complete and all(_snap_time(s) < now - ORPHAN_GRACE for s in _snaps(e))
    )
    locks = stale_lock_ids(repo, env)
    forget = [s["id"] for bid in drop + orphans for s in _snaps(cat[bid])] + locks
    result = {"keep": sorted((b for b in decisions if decisions[b]["keep"]), reverse=True), "drop": drop,
              "orphans": orphans, "locks": locks, "decisions": decisions, "applied": False,
              "forget": forget}
    if confirm:
        repo.unlock_stale()  # a killed backup's restic lock would block forget and prune
        repo.forget(forget, prune=False)
        repo.prune()
        result["applied"] = True
    result["temp_files"] = repo.temp_leftovers(now - TEMP_GRACE, delete=confirm)  # listed, or removed
    return result


def _snaps(entry: dict) -> list[dict]:
    return [s for s in (entry["dump"], entry["manifest"], *entry["verify"]) if s]


def _snap_time(s: dict) -> datetime:
    return datetime.fromisoformat(s["time"][:19]).replace(tzinfo=UTC)
