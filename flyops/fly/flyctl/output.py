"""What flyctl prints that this repository reads, beyond `--json`: each with where flyctl says it."""

from __future__ import annotations

import re

from flyops.secret import Secret

_POSTGRES_CREATE_PASSWORD = re.compile(r"^\s*Password:\s*(\S+)\s*$", re.MULTILINE)


def postgres_create_password(stdout: str) -> Secret | None:
    """The superuser password `postgres create` prints once, last, after its health watch
    (flypg/launcher.go LaunchMachinesPostgres: "Password: ..."); None when it printed none."""
    m = _POSTGRES_CREATE_PASSWORD.search(stdout or "")
    return Secret(m.group(1)) if m else None


# volumes in these states are on their way out (flyctl drops them from `volumes list` too)
GONE_VOLUME_STATES = {"scheduling_destroy", "fork_cleanup", "waiting_for_detach", "pending_destroy", "destroying", "destroyed"}
