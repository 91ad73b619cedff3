"""The one-backup-at-a-time lock of an environment, kept IN its restic repository.

A lock is a small snapshot (tags `part=lock`, `env=<env>`, `lock=<token>`, `pid=`, `holder=`)
in the same repository, so it is seen by every machine that backs up there: a laptop and a CI
runner backing up to one S3 bucket, or `--on` a bastion. No other storage is needed, and it
works for every backend restic has.

The protocol is restic's own for its lock files (internal/repository/lock_file.go: `newLock`
writes the lock, waits `waitBeforeLockCheck` = 200 ms, then `checkForOtherLocks` fails if any
other lock is there): write ours, then list; if any other live lock of the environment is
listed, give ours up and fail with Busy. Two runs that start together may both give up (both
exit 4 and nothing is written); two runs can never both go on, since the later writer's list
always shows the earlier lock. No clocks are compared for that.

Stale rule, also restic's (lock_file.go `Stale`, `staleLockTimeout` = 30 min; lock.go
`defaultRefreshInterval` = 5 min): the holder writes a fresh lock snapshot every REFRESH_EVERY
seconds while it runs; a lock whose newest snapshot is older than STALE_AFTER is stale, and so
is one written on this machine by a process that no longer exists (a backup killed with
SIGKILL). Stale locks are ignored.

Releasing forgets the lock's snapshots. `restic forget` takes restic's exclusive lock, which
fails while any other restic process (another host's backup, which is about to give up) is
writing; then one more snapshot (tag `released`) is written instead, as `restic backup` takes
a shared lock only. `db.prune` (which holds restic's exclusive lock anyway) removes the
snapshots of released and stale locks.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime

from flyops.db.manifest import utcnow
from flyops.db.restic import Repo, tag_value
from flyops.errors import Busy
from flyops.procs import user_at_host

LOCK_FILE = "lock.json"
STALE_AFTER = 30 * 60  # seconds (restic: staleLockTimeout)
REFRESH_EVERY = 5 * 60  # seconds (restic: defaultRefreshInterval)


def snapshot_time(snap: dict) -> datetime:
    return datetime.fromisoformat(snap["time"][:19]).replace(tzinfo=UTC)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def live_locks(snaps: list[dict], *, now: datetime | None = None, hostname: str | None = None) -> dict[str, list[dict]]:
    """token -> its snapshots, for the locks among `snaps` that are not stale (pure but for the
    same-host PID probe)."""
    now = now or datetime.now(UTC)
    hostname = hostname or socket.gethostname()
    by_token: dict[str, list[dict]] = {}
    for s in snaps:
        token = tag_value(s, "lock")
        if token:
            by_token.setdefault(token, []).append(s)
    live = {}
    for token, group in by_token.items():
        if any("released" in (s.get("tags") or []) for s in group):
            continue
        newest = max(snapshot_time(s) for s in group)
        if (now - newest).total_seconds() > STALE_AFTER:
            continue
        holder, pid = tag_value(group[0], "holder"), tag_value(group[0], "pid")
        if holder == hostname and pid and pid.isdigit() and not _pid_alive(int(pid)):
            continue  # killed on this machine: nobody will ever release it
        live[token] = group
    return live


def lock_snapshots(repo: Repo, env: str) -> list[dict]:
    return repo.snapshots("part=lock", f"env={env}")


def stale_lock_ids(repo: Repo, env: str) -> list[str]:
    """Snapshot ids of the environment's released and stale locks (what `db.prune` removes)."""
    snaps = lock_snapshots(repo, env)
    live = live_locks(snaps)
    return [s["id"] for s in snaps if tag_value(s, "lock") not in live]


def describe_lock_group(group: list[dict]) -> str:
    s = group[0]
    who = tag_value(s, "who") or "?"
    since = tag_value(s, "since") or s["time"][:19]
    return f"{who} (pid {tag_value(s, 'pid') or '?'} on {tag_value(s, 'holder') or '?'}, since {since})"


@contextlib.contextmanager
def repository_lock(repo: Repo, env: str, *, what: str = "backup") -> Iterator[str]:
    """Hold the environment's lock in `repo` (yields the token). Busy (exit 4) when another
    live lock is there. A missing repository or a wrong password fails here, before any
    dump starts, with restic's own reason (`explain_failure`)."""
    token = secrets.token_hex(8)
    host, pid, who = socket.gethostname(), os.getpid(), user_at_host()
    tags = ["part=lock", f"env={env}", f"lock={token}", f"pid={pid}", f"holder={host}", f"who={who}",
            f"since={utcnow()}", f"what={what}"]
    mine: list[str] = []
    guard = threading.Lock()

    def write(*extra: str) -> None:
        sid = repo.store_json(LOCK_FILE, {"token": token, "pid": pid, "holder": host, "who": who, "what": what},
                              [*tags, *extra], env)
        with guard:
            mine.append(sid)

    stop = threading.Event()
    refresher: threading.Thread | None = None
    try:
        write()
        snaps = lock_snapshots(repo, env)
        live = live_locks(snaps, hostname=host)
        others = {t: g for t, g in live.items() if t != token}
        if others:
            raise Busy(f"another backup of {env} holds the lock in {repo.location}: "
                       + "; ".join(describe_lock_group(g) for g in others.values()),
                       fix="wait for it to finish (backups never queue); a lock not refreshed for 30 minutes, "
                           "or left by a process gone from this machine, is stale and ignored")

        def refresh() -> None:
            while not stop.wait(REFRESH_EVERY):
                with contextlib.suppress(Exception):
                    write()

        refresher = threading.Thread(target=refresh, name="repo-lock-refresh", daemon=True)
        refresher.start()
        yield token
    finally:
        stop.set()
        if refresher is not None:
            refresher.join(timeout=60)
        if mine:
            try:
                repo.forget(list(mine), prune=False)
            except Exception:  # noqa: BLE001 - another host's restic is writing: mark it released instead
                with contextlib.suppress(Exception):
                    write("released")  # should even this fail, the lock goes stale in STALE_AFTER
