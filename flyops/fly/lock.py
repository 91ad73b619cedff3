"""The per-environment deploy lock, kept on Fly so every operator and CI job sees it.

Where it lives, and why: Fly app names are unique across all of Fly.io and `fly apps create`
either creates the name or fails (flyctl.md §1), so **creating the app
`<project>-lock-<env>` is an atomic test-and-set** that needs nothing but the Fly token
everyone already has. Whoever created it holds the lock. The holder then writes who, when,
why and which task into the metadata of one machine in that app, created and never started
(`fly machine create`, §14: no CPU or memory is billed), which anyone reads back with
`fly machine list --json`. Releasing is `fly apps destroy`. The name sits outside the
environment's `<project>-<env>-` prefix, so `inv plan` does not report it as a stray app.

Between the two steps (app created, holder machine not yet written) the lock is reported as
held by "someone still acquiring it"; a holder that crashed leaves a stale lock that
`inv lock.status` shows with its age and `inv lock.release` removes.

A lock taken by hand (`inv lock.acquire -m why`) stops everybody else's deploys; the same
operator's own `inv deploy` runs under it (and leaves it held). A lock taken by a deploy is
exclusive even for its own operator, so two concurrent runs from one laptop refuse too.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from flyops.errors import Busy, OpsError
from flyops.fly.audit import RECORD_IMAGE, now_iso
from flyops.fly.flyctl import commands as fly
from flyops.fly.flyctl.runner import FlyRunner
from flyops.procs import operator
from flyops.secret import redact
from flyops.stack.model import Stack

MANUAL_TASK = "lock.acquire"
ACQUIRING = "someone still acquiring it (or a run that crashed before recording itself)"


def lock_app(stack: Stack) -> str:
    return f"{stack.project.name}-lock-{stack.env}"


@dataclass(frozen=True)
class Holder:
    who: str
    since: str  # ISO UTC
    reason: str
    task: str
    lock_id: str = ""

    def metadata(self) -> dict[str, str]:
        return {
            "flyops_kind": "lock",
            "flyops_lock_id": self.lock_id,
            "flyops_who": self.who,
            "flyops_since": self.since,
            "flyops_task": self.task,
            "flyops_reason": self.reason[:500],
        }

    @classmethod
    def from_machines(cls, machines: list[dict[str, Any]]) -> Holder:
        for m in machines:
            meta = ((m.get("config") or {}).get("metadata")) or {}
            if meta.get("flyops_kind") == "lock":
                return cls(
                    who=meta.get("flyops_who", "?"),
                    since=meta.get("flyops_since", ""),
                    reason=meta.get("flyops_reason", ""),
                    task=meta.get("flyops_task", ""),
                    lock_id=meta.get("flyops_lock_id", ""),
                )
        return cls(who=ACQUIRING, since="", reason="", task="")

    def age(self) -> str:
        try:
            then = datetime.fromisoformat(self.since.replace("Z", "+00:00"))
        except ValueError:
            return "?"
        seconds = int((datetime.now(UTC) - then).total_seconds())
        if seconds < 120:
            return f"{seconds}s"
        if seconds < 7200:
            return f"{seconds // 60}m"
        return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"

    def describe(self) -> str:
        if not self.since:
            return f"held by {self.who}"
        why = f": {self.reason!r}" if self.reason else ""
        return f"held by {self.who} since {self.since} ({self.age()} ago) for {self.task}{why}"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class LockHeld(Busy):
    """The environment's lock is held by someone else (exit 4). `holder` says who."""

    def __init__(self, stack: Stack, holder: Holder):
        super().__init__(
            f"{stack.env} is locked: {holder.describe()}; nothing was changed",
            fix=f"wait for it to finish; if the lock is stale: inv lock.release --env {stack.env}",
        )
        self.holder = holder


def holder(stack: Stack, runner: FlyRunner) -> Holder | None:
    """Who holds the lock now, or None. Reads only: the lock app's machines (one call when
    the lock is held, which is when it matters), and the org's app list when that fails."""
    try:
        machines = runner.json(fly.machine_list(lock_app(stack))) or []
    except OpsError:
        apps = runner.json(fly.apps_list(stack.project.org)) or []
        if not any(a.get("Name") == lock_app(stack) for a in apps):
            return None
        raise
    return Holder.from_machines(machines)


def acquire(stack: Stack, runner: FlyRunner, task: str, message: str = "") -> Holder:
    """Take the lock or raise LockHeld naming the holder. Atomic: `fly apps create`."""
    stack.require_fly()
    me = Holder(who=operator(), since=now_iso(), reason=redact(message, runner.masks), task=task,
                lock_id=uuid.uuid4().hex)
    if runner.dry:  # the create would only be printed: look before, so a dry run still refuses
        current = holder(stack, runner)
        if current is not None:
            raise LockHeld(stack, current)
    try:
        runner.run(fly.apps_create(lock_app(stack), stack.project.org), bookkeeping=True)
    except OpsError:
        current = _settled_holder(stack, runner)
        if current is not None:
            raise LockHeld(stack, current) from None
        raise
    try:
        runner.run(fly.machine_create(lock_app(stack), RECORD_IMAGE, region=stack.primary_region,
                                      name="holder", metadata=me.metadata()), bookkeeping=True)
    except OpsError:
        runner.run(fly.apps_destroy(lock_app(stack)), check=False, bookkeeping=True)
        raise
    return me


def _settled_holder(stack: Stack, runner: FlyRunner, wait: float = 5.0) -> Holder | None:
    """The holder, waiting briefly while the winner of a race is still writing its name."""
    deadline = time.monotonic() + wait
    current = holder(stack, runner)
    while current is not None and not current.since and time.monotonic() < deadline:
        time.sleep(0.5)
        current = holder(stack, runner)
    return current


def release(stack: Stack, runner: FlyRunner, *, lock_id: str | None = None) -> Holder | None:
    """Release the lock; returns who held it (None if nobody did).

    With `lock_id`, only that acquisition is released: if someone removed a stale lock of
    ours and took it themselves meanwhile, theirs is left alone.
    """
    current = holder(stack, runner)
    if current is None:
        return None
    if lock_id is not None and current.lock_id and current.lock_id != lock_id:
        return current
    runner.run(fly.apps_destroy(lock_app(stack)), bookkeeping=True)
    return current


@contextmanager
def deploy_lock(stack: Stack, runner: FlyRunner, task: str, message: str = "") -> Iterator[Holder]:
    """Hold the environment's lock for the block; raises LockHeld (exit 4) when someone else has it.

    The lock is released when the block ends, however it ends. A lock the same operator took
    by hand (`inv lock.acquire`) is used as it is and left held.
    """
    try:
        me = acquire(stack, runner, task, message)
    except LockHeld as exc:
        if exc.holder.task == MANUAL_TASK and exc.holder.who == operator():
            yield exc.holder
            return
        raise
    try:
        yield me
    finally:
        try:
            release(stack, runner, lock_id=me.lock_id)
        except OpsError as exc:
            runner.echo(f"warning: could not release the {stack.env} lock ({lock_app(stack)}): {exc.message}; "
                        f"run `inv lock.release --env {stack.env}`")
