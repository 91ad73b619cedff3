"""One error type at the top, and the documented exit codes.

Every failure a user can cause or meet is an `OpsError`. The task entry point prints its
message (and the fix, where known) on one line each and exits with `code`; a traceback is
shown only with `inv -d` / `FLYOPS_DEBUG=1`.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """The exit-code table (also in the README)."""

    OK = 0
    FAILURE = 1  # an operation failed (flyctl, pg_dump, restic, ...)
    BAD_INPUT = 2  # stack file, env file or task option is wrong; nothing was changed
    VERIFY_FAILED = 3  # a backup or a restore did not verify
    BUSY = 4  # another run holds the lock (backup lock, deploy lock)
    PRECONDITION = 5  # version skew, missing extension, unsafe target, missing tool
    TARGET_MISSED = 6  # a drill worked but missed its RTO/RPO target
    CHANGES_PENDING = 7  # plan/diff/check: the world differs from the stack (for CI)
    PARTLY_CHANGED = 8  # failed after changing something (the message lists what); a re-run converges
    COPY_FAILED = 9  # the backup is complete in the primary repository, a copy of it (backup.copies) is not
    INTERRUPTED = 130  # Ctrl-C / SIGTERM


class OpsError(Exception):
    """An error meant for the operator: a message, an optional fix, an exit code.

    Never put a secret value in `message` or `fix`.
    """

    code: ExitCode = ExitCode.FAILURE

    def __init__(self, message: str, *, fix: str | None = None, code: ExitCode | None = None):
        super().__init__(message)
        self.message = message
        self.fix = fix
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return self.message if not self.fix else f"{self.message}\n  fix: {self.fix}"


class BadInput(OpsError):
    """A stack file, env file or option is wrong. Raised before anything changes."""

    code = ExitCode.BAD_INPUT


class Busy(OpsError):
    code = ExitCode.BUSY


class PreconditionFailed(OpsError):
    code = ExitCode.PRECONDITION


class VerificationFailed(OpsError):
    code = ExitCode.VERIFY_FAILED


class TargetMissed(OpsError):
    code = ExitCode.TARGET_MISSED


class ChangesPending(OpsError):
    code = ExitCode.CHANGES_PENDING


class Interrupted(OpsError):
    code = ExitCode.INTERRUPTED


def explain(exc: BaseException) -> OpsError:
    """Any exception as an OpsError for the one error boundary: one line naming what it can
    (the file of an OS error, the database's own message), a fix, a documented code.

    Known bad input is turned into BadInput where it is read (stack, env file, lock file,
    options); this is the net under everything else: a library or the OS failing."""
    if isinstance(exc, OpsError):
        return exc
    if isinstance(exc, OSError):
        import errno

        where = f"{exc.filename}: " if exc.filename else ""
        what = exc.strerror or str(exc) or type(exc).__name__
        if exc.errno == errno.ENOSPC:
            return OpsError(f"{where}{what}", fix="free space on that file system, then re-run")
        if exc.errno in (errno.EACCES, errno.EPERM):
            return PreconditionFailed(f"{where}{what}", fix="check the owner and mode of that path (ls -l)")
        if exc.errno in (errno.EISDIR, errno.ENOTDIR, errno.ENOENT):
            return OpsError(f"{where}{what}", fix="check that the path exists and is a file")
        return OpsError(f"{where}{what}")
    if isinstance(exc, UnicodeDecodeError):
        return BadInput(f"a file is not UTF-8 text: {exc}", fix="re-save it as UTF-8 (e.g. iconv -f latin1 -t utf-8)")
    db = _database_error(exc)
    if db is not None:
        return db
    text = str(exc).strip().splitlines()
    return OpsError(
        f"unexpected {type(exc).__name__}" + (f": {text[0]}" if text else ""),
        fix="re-run with `inv -d ...` for the traceback, and report it: this is a defect in flyops",
    )


def _database_error(exc: BaseException) -> OpsError | None:
    import sys

    psycopg = sys.modules.get("psycopg")
    if psycopg is None or not isinstance(exc, psycopg.Error):
        return None
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    sqlstate = getattr(exc, "sqlstate", None) or ""
    if sqlstate == "42501":  # insufficient_privilege
        return PreconditionFailed(f"the database refused: {first}",
                                  fix="grant the role that privilege, or connect as a role that has it")
    if isinstance(exc, psycopg.OperationalError):
        return OpsError(f"database connection failed: {first}", fix="check the database URL, and that the server is up")
    return OpsError(f"database error{f' {sqlstate}' if sqlstate else ''}: {first}")
