"""nox sessions: `nox -s tests` and `nox -s lint` (system packages: run scripts/setup once)."""

import nox

nox.options.sessions = ["lint", "tests"]


@nox.session(python="3.11")
def tests(session: nox.Session) -> None:
    """The whole test suite against real PostgreSQL, Redis, sshd and an S3 endpoint."""
    session.install("-e", ".[test]")
    session.run("pytest", *session.posargs)


@nox.session(python="3.11")
def lint(session: nox.Session) -> None:
    """ruff over the package, the tasks and the tests."""
    session.install("ruff")
    session.run("ruff", "check", "flyops", "tests", "tasks.py", "noxfile.py")
