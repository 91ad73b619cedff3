"""What every task shares: the error boundary, the stack, the runner."""

from __future__ import annotations

import functools
import inspect
import logging
import os
import sys
import threading
import traceback
from pathlib import Path
from typing import Any

from invoke import Argument, Task
from invoke import task as invoke_task
from invoke.exceptions import Exit

from flyops import logs, present
from flyops.errors import BadInput, ExitCode, OpsError, explain
from flyops.fly.flyctl.runner import FlyRunner
from flyops.procs import sigterm_as_interrupt
from flyops.secret import redact_known
from flyops.stack.model import Stack, load_stack

logs.install()  # before Invoke parses the task options (it logs them with -d)

ROOT = Path(__file__).resolve().parents[2]


def root() -> Path:
    """The repository root; FLYOPS_ROOT overrides it (tests run tasks on a copy)."""
    return Path(os.environ.get("FLYOPS_ROOT") or ROOT)


def _debug() -> bool:
    return bool(os.environ.get("FLYOPS_DEBUG")) or logging.getLogger("invoke").isEnabledFor(logging.DEBUG)




#: The short flags, one meaning each in every task; none is one of Invoke's core flags
#: (`inv --help`: -c -d -D -e -f -F -h -l -p -r -R -T -V -w). Every other option is long only.
SHORT_FLAGS = {"json": "j", "yes": "y", "message": "m", "verbose": "v"}
INVOKE_CORE_FLAGS = frozenset("cdDefFhlprRTVw")
#: Options that take a whole number, checked before the task runs (Invoke casts only options
#: whose default is an int, and with a traceback on a bad value).
WHOLE_NUMBER_OPTIONS = ("jobs", "limit", "keep")
#: Where `--env` comes from when it is not given.
ENV_VARIABLE = "FLYOPS_ENV"


class _CheckedArgument(Argument):
    """An option whose value Invoke casts (an int default): a bad value is one line, exit 2."""

    def set_value(self, value: Any, cast: bool = True) -> None:
        try:
            super().set_value(value, cast=cast)
        except ValueError:
            kind = getattr(self.kind, "__name__", "value")
            raise Exit(f"error: --{self.name.replace('_', '-')} {value!r} is not {_KIND_WORDS.get(kind, kind)}",
                       code=int(ExitCode.BAD_INPUT)) from None


_KIND_WORDS = {"int": "a whole number", "float": "a number"}


class OpsTask(Task):
    """Our tasks' options: the shared short flags only, and checked casts."""

    def arg_opts(self, name: str, default: Any, taken_names: set[str]) -> dict[str, Any]:
        opts = super().arg_opts(name, default, taken_names)
        short = SHORT_FLAGS.get(name)
        if short and short not in taken_names:
            opts["names"] = [*opts["names"], short]
        return opts

    def get_arguments(self, ignore_unknown_help: bool | None = None) -> list[Argument]:
        args = super().get_arguments(ignore_unknown_help)
        for arg in args:
            arg.__class__ = _CheckedArgument  # same data, a set_value that explains a bad value
        return args


def _exposed_signature(fn: Any) -> tuple[inspect.Signature, list[str]]:
    """`fn`'s signature as Invoke should see it: every argument an option with a default
    (None for the required ones, which the boundary then asks for by name), so that a
    missing `--env` is our message, not Invoke's "did not receive required positional
    arguments". Returns the signature and the names of the required arguments."""
    sig = inspect.signature(fn)
    params, required = [], []
    for i, p in enumerate(sig.parameters.values()):
        if i > 0 and p.default is inspect.Parameter.empty:
            required.append(p.name)
            p = p.replace(default=None)
        params.append(p)
    return sig.replace(parameters=params), required


def _fill_required(required: list[str], kw: dict[str, Any]) -> None:
    for name in required:
        if kw.get(name) not in (None, ""):
            continue
        if name == "env":
            if os.environ.get(ENV_VARIABLE):
                kw["env"] = os.environ[ENV_VARIABLE]
                continue
            from flyops.stack.model import environments

            envs = environments(root())
            raise BadInput("--env is required: which environment?",
                           fix=f"pass --env with one of: {', '.join(envs)} (or export {ENV_VARIABLE}={'staging' if 'staging' in envs or not envs else envs[0]})")
        raise BadInput(f"--{name.replace('_', '-')} is required", fix=f"pass --{name.replace('_', '-')} VALUE (see inv --help TASK)")


def _check_whole_numbers(kw: dict[str, Any]) -> None:
    for name in WHOLE_NUMBER_OPTIONS:
        value = kw.get(name)
        if value is None or isinstance(value, int):
            continue
        text = str(value).strip()
        if not text.isdigit():
            raise BadInput(f"--{name} {value!r} is not a whole number", fix=f"e.g. --{name} 4")
        kw[name] = int(text)


def fill_placeholders(text: str, env: str | None) -> str:
    """The core's messages say `env/<env>.env` where they do not know the environment; the
    boundary does, so a fix line names the real file."""
    if env:
        text = text.replace("<env>", env).replace("--env ENV", f"--env {env}")
    return text


def fail(exc: BaseException, *, as_json: bool, env: str | None = None, ctx: Any = None) -> Exit:
    """The one way a task ends in error: the message and fix (secrets masked) on stderr, as
    JSON on stdout too when --json asked for it and nothing was printed yet, and the code
    (PARTLY_CHANGED when the task's runners had already changed something)."""
    err = with_changes(ctx, explain(exc))
    message = fill_placeholders(redact_known(err.message), env)
    fix = fill_placeholders(redact_known(err.fix), env) if err.fix else None
    if _debug():
        sys.stderr.write(redact_known(traceback.format_exc()))
    if as_json and not present.json_printed():
        present.print_json({"error": message, "fix": fix, "exit_code": int(err.code)})
    lines = [f"error: {message}"] + ([f"  fix: {fix}"] if fix else [])
    return Exit("\n".join(lines), code=int(err.code))


#: the help of options several tasks share, defined once; a task's own `help=` entry wins
COMMON_HELP = {
    "env": "environment (fly/<env>.toml), e.g. staging; or $FLYOPS_ENV",
    "json": "print JSON on stdout (errors too: {error, fix, exit_code})",
    "verbose": "echo every flyctl call with its timing",
    "on": "run pg_dump/pg_restore and restic on another machine over SSH (user@host[:port]), "
          "e.g. a bastion inside Fly's network",
    "ssh_key": "private key file for --on",
}


def task(fn: Any = None, **kwargs: Any):
    """`invoke.task` with the one error boundary: any exception (ours, a library's, the OS's)
    becomes one readable message (and its fix) on stderr and its documented exit code; the
    traceback only with `inv -d`. Also: required options are asked for by name (`--env` may
    come from $FLYOPS_ENV), whole-number options are checked, short flags are the shared ones."""

    def wrap(fn):
        exposed, required = _exposed_signature(fn)

        @functools.wraps(fn)
        def body(*a: Any, **kw: Any):
            logs.install()
            try:
                with sigterm_as_interrupt():
                    _fill_required(required, kw)
                    _check_whole_numbers(kw)
                    return fn(*a, **kw)
            except KeyboardInterrupt:
                raise Exit(_interrupted(a[0] if a else None), code=int(ExitCode.INTERRUPTED)) from None
            except Exit:
                raise
            except Exception as exc:  # noqa: BLE001 - this is the boundary: every error ends here
                env = kw.get("env") if isinstance(kw.get("env"), str) else None
                raise fail(exc, as_json=bool(kw.get("json")), env=env, ctx=a[0] if a else None) from None

        body.__signature__ = exposed  # what Invoke reads (inspect.signature stops here)
        kwargs["help"] = {**{k: v for k, v in COMMON_HELP.items() if k in exposed.parameters},
                          **kwargs.get("help", {})}
        kwargs.setdefault("klass", OpsTask)
        kwargs.setdefault("auto_shortflags", False)
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
        from flyops.stack.model import environments

        raise BadInput("--env is required", fix=f"pass --env with one of: {', '.join(environments(root()))}")
    return load_stack(root(), env)


def runner_for(ctx: Any, *, verbose: bool = False) -> FlyRunner:
    """The flyctl runner, with Invoke's global --dry / --echo honoured."""
    dry = bool(getattr(ctx.config.run, "dry", False))
    echo = bool(getattr(ctx.config.run, "echo", False)) or verbose
    runner = FlyRunner(dry=dry, verbose=echo, echo=say)
    ctx.__dict__.setdefault("_flyops_runners", []).append(runner)  # for the error boundary: what changed
    return runner


_say_lock = threading.Lock()


def say(line: str) -> None:
    """A progress line on stderr, whole: calls run in threads, and `print` writes the text and
    its newline separately, so two lines could be glued together (`…staged)my-app-…`)."""
    with _say_lock:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
