"""Asking before a change: `--yes` skips the question; without a terminal there is no one to ask."""

from __future__ import annotations

import sys

from flyops.errors import BadInput, OpsError


def confirm(question: str, *, yes: bool, option: str = "--yes") -> None:
    """Return when the operator agreed; raise otherwise (exit 2 when not interactive)."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise BadInput(
            f"{question} needs confirmation, and this run is not interactive; nothing was changed",
            fix=f"look at the plan above, then re-run with {option}",
        )
    answer = input(f"{question} [y/N] ").strip().lower()
    if answer not in ("y", "yes"):
        raise OpsError("not confirmed; nothing was changed", code=0)  # type: ignore[arg-type]
