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
