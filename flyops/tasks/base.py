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

from flyops import logs
from flyops.errors import ExitCode, OpsError
from flyops.flyctl.runner import FlyRunner
from flyops.stack import Stack, load_stack

logs.install()  # before Invoke parses the task options (it logs them with -d)

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
            logs.install()
            try:
                with terminate_as_interrupt():
                    return fn(*a, **kw)
            except OpsError as exc:
                if _debug():
                    traceback.print_exc()
                lines = [f"error: {exc.message}"] + ([f"  fix: {exc.fix}"] if exc.fix else [])
                raise Exit("\n".join(lines), code=int(exc.code)) from None
            except KeyboardInterrupt:
                raise Exit("interrupted", code=int(ExitCode.INTERRUPTED)) from None

        return invoke_task(**kwargs)(body)

    return wrap(fn) if fn is not None else wrap


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
    return FlyRunner(dry=dry, verbose=echo, echo=lambda line: print(line, file=sys.stderr, flush=True))
