"""Shared test configuration. Service fixtures (pg, redis_server, s3, sshd) live in tests/services.py."""

import shutil
import subprocess

from flyops.toolpath import prefer_venv_tools

pytest_plugins = ["tests.services"]

prefer_venv_tools()  # the same restic as `inv` uses (scripts/setup may put one in .venv/bin)


def _first_line(argv: list[str]) -> str:
    """The first line a tool prints about its version (stdout or stderr), or why there is none."""
    if not shutil.which(argv[0]):
        return f"{argv[0]} not found"
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{argv[0]}: {exc}"
    lines = [ln.strip() for ln in (p.stdout + "\n" + p.stderr).splitlines() if ln.strip()]
    return lines[0] if lines else f"{argv[0]} printed nothing (exit {p.returncode})"


def pytest_report_header(config):  # noqa: ARG001 - pytest's hook signature
    """Which PostgreSQL, restic, Redis and sshd this run used: the suite runs on whatever
    majors the machine's Debian ships (12: PostgreSQL 15, Redis 7.0; 13: PostgreSQL 17, Redis 8.0),
    so the header says which, found the way the fixtures find them."""
    return tool_versions()


def pytest_terminal_summary(terminalreporter, exitstatus, config):  # noqa: ARG001
    """`pytest -q` (scripts/test -q in CI) prints no header: say it at the end instead."""
    if config.get_verbosity() < 0:
        for line in tool_versions():
            terminalreporter.write_line(line)


def tool_versions() -> list[str]:
    from flyops.db.scratch import find_pg_bindir
    from flyops.errors import OpsError

    try:
        postgres = _first_line([str(find_pg_bindir() / "postgres"), "--version"])
    except OpsError as exc:
        postgres = exc.message
    sshd = shutil.which("sshd") or "/usr/sbin/sshd"
    return [
        f"tools: {postgres}; {_first_line(['restic', 'version'])}",
        f"tools: {_first_line(['redis-server', '--version'])}; sshd {_first_line([sshd, '-V'])}",
    ]
