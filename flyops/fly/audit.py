"""The audit trail: one line per mutating task, kept on Fly where the whole team reads it.

Where it lives, and why: every operator and every CI job already holds a Fly token for the
organization, and nothing else is shared by all of them (the backup repository is a local
folder for staging, env files stay on laptops, CI cannot push to git). So each environment
has one small *ops app*, `<project>-ops-<env>` (outside the `<project>-<env>-` prefix so
`inv plan` does not take it for a stray app of the environment), and every audit line is a
machine in it that is **created and never started** (`fly machine create`, flyctl.md §14):
it costs no CPU or memory, and its `config.metadata` holds the line. Anyone in the org reads
the trail with `fly machine list --app <project>-ops-<env> --json`, or `inv audit --env X`.
Lines are independent objects, so two writers never race on a shared file.

A line: when (UTC), who, environment, task, what changed (a sentence, never a secret value:
the text is also passed through the runner's masks), result, and optional structured
details (JSON; `deploy` records which apps went from which release to which, and rollback
reads that back).

Lines stay until `inv audit --env X --keep N` removes all but the newest N.

`record()` never raises: the operation it describes has already happened, and failing it
afterwards would hide its real result. A line that cannot be written is reported on stderr.
`recorded()` wraps the changing part of a task and writes its real outcome (ok, failed: why,
interrupted) however it ends.
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets as _random
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from flyops.errors import ExitCode, OpsError
from flyops.fly.flyctl import commands as fly
from flyops.fly.flyctl.runner import FlyRunner
from flyops.procs import operator
from flyops.secret import redact
from flyops.stack.model import Stack

# A tiny public image: the machines are never started, flyctl only needs a resolvable image.
RECORD_IMAGE = "docker.io/library/busybox:1.36"
KIND_KEY = "flyops_kind"
MAX_VALUE = 1000  # characters per metadata value; longer text is cut with an ellipsis
# a task that ends with one of these before changing anything was refused, not run
REFUSALS = (ExitCode.OK, ExitCode.BAD_INPUT, ExitCode.BUSY, ExitCode.PRECONDITION)


def ops_app(stack: Stack) -> str:
    """The per-environment app that holds the audit trail."""
    return f"{stack.project.name}-ops-{stack.env}"


def now_iso() -> str:
    """UTC with milliseconds, so lines written within one second still sort."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Entry:
    at: str
    who: str
    env: str
    task: str
    changed: str
    result: str
    details: dict[str, Any] = field(default_factory=dict)
    machine_id: str = ""

    def metadata(self) -> dict[str, str]:
        return {
            KIND_KEY: "audit",
            "flyops_at": self.at,
            "flyops_who": _cut(self.who),
            "flyops_env": self.env,
            "flyops_task": self.task,
            "flyops_changed": _cut(self.changed),
            "flyops_result": _cut(self.result),
            "flyops_details": json.dumps(self.details, separators=(",", ":"), sort_keys=True),
        }

    @classmethod
    def from_machine(cls, machine: dict[str, Any]) -> Entry | None:
        meta = ((machine.get("config") or {}).get("metadata")) or {}
        if meta.get(KIND_KEY) != "audit":
            return None
        try:
            details = json.loads(meta.get("flyops_details") or "{}")
        except ValueError:
            details = {}
        return cls(
            at=meta.get("flyops_at", ""),
            who=meta.get("flyops_who", ""),
            env=meta.get("flyops_env", ""),
            task=meta.get("flyops_task", ""),
            changed=meta.get("flyops_changed", ""),
            result=meta.get("flyops_result", ""),
            details=details if isinstance(details, dict) else {},
            machine_id=machine.get("id", ""),
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _cut(text: str) -> str:
    return text if len(text) <= MAX_VALUE else text[: MAX_VALUE - 1] + "…"


def record(
    stack: Stack,
    runner: FlyRunner,
    task: str,
    changed: str,
    result: str = "ok",
    details: dict[str, Any] | None = None,
) -> Entry | None:
    """Append one line to the environment's audit trail. Returns it, or None under --dry or
    when it could not be written (then a warning is printed). Never raises."""
    entry = Entry(
        at=now_iso(),
        who=operator(),
        env=stack.env,
        task=task,
        changed=redact(changed, runner.masks),
        result=redact(result, runner.masks),
        details=json.loads(redact(json.dumps(details or {}), runner.masks)),
    )
    if runner.dry:
        runner.echo(f"[dry] audit: {entry.task}: {entry.changed} ({entry.result})")
        return None
    name = "audit-" + re.sub(r"[^0-9]", "", entry.at) + "-" + _random.token_hex(3)
    call = fly.machine_create(ops_app(stack), RECORD_IMAGE, region=stack.primary_region, name=name,
                              metadata=entry.metadata())
    try:
        try:
            runner.run(call, bookkeeping=True)
        except OpsError:
            if _app_exists(stack, runner, ops_app(stack)):
                raise
            runner.run(fly.apps_create(ops_app(stack), stack.project.org), bookkeeping=True)
            runner.run(call, bookkeeping=True)
    except OpsError as exc:
        runner.echo(f"warning: could not append to the audit trail ({ops_app(stack)}): {exc.message}")
        return None
    return entry


@dataclass
class Outcome:
    """What a task tells `recorded` about its run: `changed` (a sentence) and `details` for the
    line; `written = True` when the task wrote its own line (deploy does, with rollback's data)."""

    changed: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    written: bool = False


@contextlib.contextmanager
def recorded(stack: Stack, runner: FlyRunner, task: str) -> Iterator[Outcome]:
    """One audit line with the task's real outcome, however the block ends: `ok`, `failed: why`
    or `interrupted` (Ctrl-C / SIGTERM). Wrap the part of a task that changes things (after the
    confirmation). When the block fails before saying what it changed, the line lists what the
    runner saw change (successful mutating flyctl calls, files written)."""
    out = Outcome()
    before = len(runner.changes())

    def changed() -> str:
        if out.changed:
            return out.changed
        done = runner.changes()[before:]
        return f"{len(done)} change(s): " + "; ".join(done) if done else "nothing changed"

    try:
        yield out
    except KeyboardInterrupt:
        if not out.written:
            record(stack, runner, task, changed(), "interrupted (Ctrl-C or SIGTERM)", out.details)
        raise
    except OpsError as exc:
        refused = exc.code in REFUSALS and not out.changed and not runner.changes()[before:]
        if not out.written and not refused:  # a refusal before any change is not an outcome to record
            record(stack, runner, task, changed(), f"failed: {exc.message}", out.details)
        raise
    except Exception as exc:
        if not out.written:
            record(stack, runner, task, changed(), f"failed: {type(exc).__name__}: {exc}", out.details)
        raise
    else:
        if not out.written:
            record(stack, runner, task, changed(), "ok", out.details)


def _app_exists(stack: Stack, runner: FlyRunner, app: str) -> bool:
    apps = runner.json(fly.apps_list(stack.project.org)) or []
    return any(a.get("Name") == app for a in apps)


def entries(stack: Stack, runner: FlyRunner, *, task: str | None = None) -> list[Entry]:
    """Every line of the trail, newest first (optionally only one task's)."""
    if not _app_exists(stack, runner, ops_app(stack)):
        return []
    machines = runner.json(fly.machine_list(ops_app(stack))) or []
    out = [e for e in (Entry.from_machine(m) for m in machines) if e is not None]
    if task:
        out = [e for e in out if e.task == task]
    return sorted(out, key=lambda e: (e.at, e.machine_id), reverse=True)


def prune_trail(stack: Stack, runner: FlyRunner, keep: int) -> list[Entry]:
    """Destroy all but the newest `keep` lines; returns the removed ones (printed under --dry)."""
    if keep < 1:
        raise ValueError("keep at least one line")
    old = entries(stack, runner)[keep:]
    for e in old:
        runner.run(fly.machine_destroy(ops_app(stack), e.machine_id))
    return old


def last(stack: Stack, runner: FlyRunner, task: str) -> Entry | None:
    found = entries(stack, runner, task=task)
    return found[0] if found else None
