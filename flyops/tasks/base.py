"""What every task shares: the error boundary, the stack, the runner."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import signal
import sys
import threading
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from invoke import task as invoke_task
from invoke.exceptions import Exit

from flyops.errors import ExitCode, OpsError
from flyops.flyctl.runner import FlyRunner
from flyops.stack import Stack, load_stack

ROOT = Path(__file__).resolve().parents[2]


def root() -> Path:
    """The repository root; FLYOPS_ROOT overrides it (tests run tasks on a copy)."""
    return Path(os.environ.get("FLYOPS_ROOT") or ROOT)


def _debug() -> bool:
    return bool(os.environ.get("FLYOPS_DEBUG")) or logging.getLogger("invoke").isEnabledFor(logging.DEBUG)


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM (systemd stopping a unit, a CI job cancelled, `timeout`) raises KeyboardInterrupt
    like Ctrl-C does, so every task's cleanup runs: a partial backup is forgotten, a half-restored
    database dropped, a deploy lock released. Without this Python dies on the spot."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):  # noqa: ARG001
        raise KeyboardInterrupt("SIGTERM")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def task(fn: Any = None, **kwargs: Any):
    """`invoke.task` with the one error boundary: an OpsError becomes one readable message
    (and its fix) on stderr and its documented exit code; a traceback only with `inv -d`."""

    def wrap(fn):
        @functools.wraps(fn)
        def body(*a: Any, **kw: Any):
            try:
                with terminate_as_interrupt():
                    return fn(*a, **kw)
            except OpsError as exc:
                if _debug():
                    traceback.print_exc()
                exc = with_changes(a[0] if a else None, exc)
                lines = [f"error: {exc.message}"] + ([f"  fix: {exc.fix}"] if exc.fix else [])
                raise Exit("\n".join(lines), code=int(exc.code)) from None
            except KeyboardInterrupt:
                raise Exit(_interrupted(a[0] if a else None), code=int(ExitCode.INTERRUPTED)) from None

        return invoke_task(**kwargs)(body)

    return wrap(fn) if fn is not None else wrap


# Exit codes that promise "nothing was changed" (README table). When a task ends with one of
# them (or with a plain failure) after its runner really changed something, the code becomes
# PARTLY_CHANGED and the message lists the changes, so the exit code never hides a change.
UNCHANGED_CODES = (ExitCode.FAILURE, ExitCode.BAD_INPUT, ExitCode.BUSY, ExitCode.PRECONDITION)


def changes_of(ctx: Any) -> list[str]:
    """What the task's runners (made by `runner_for(ctx)`) really changed: flyctl mutations that
    succeeded, files written; not the deploy lock or the audit line."""
    return [c for r in (getattr(ctx, "__dict__", {}).get("_flyops_runners") or []) for c in r.changes()]


def _interrupted(ctx: Any) -> str:
    if not (getattr(ctx, "__dict__", {}).get("_flyops_runners")):
        return "interrupted"  # not a Fly task: its own cleanup says what it undid
    done = changes_of(ctx)
    return f"interrupted; {_listed(done)}" if done else "interrupted; nothing was changed on Fly"


def _listed(done: list[str], limit: int = 8) -> str:
    shown = "; ".join(done[:limit]) + (f"; and {len(done) - limit} more" if len(done) > limit else "")
    return f"changed before it stopped ({len(done)}): {shown}"


def with_changes(ctx: Any, exc: OpsError) -> OpsError:
    done = changes_of(ctx)
    if not done or exc.code not in UNCHANGED_CODES:
        return exc
    message = exc.message.replace("; nothing was changed", "").replace(", nothing was changed", "")
    return OpsError(f"{message}\n  {_listed(done)}", fix=exc.fix, code=ExitCode.PARTLY_CHANGED)


def stack_for(env: str | None) -> Stack:
    if not env:
        from flyops.errors import BadInput
        from flyops.stack import environments

        raise BadInput("--env is required", fix=f"pass --env with one of: {', '.join(environments(root()))}")
    return load_stack(root(), env)


def runner_for(ctx: Any, *, verbose: bool = False) -> FlyRunner:
    """The flyctl runner, with Invoke's global --dry / --echo honoured."""
    dry = bool(getattr(ctx.config.run, "dry", False))
    echo = bool(getattr(ctx.config.run, "echo", False)) or verbose
    runner = FlyRunner(dry=dry, verbose=echo, echo=_say)
    ctx.__dict__.setdefault("_flyops_runners", []).append(runner)  # for the error boundary: what changed
    return runner


def _say(line: str) -> None:
    """One write per line, so lines from concurrent calls never run into each other."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()
