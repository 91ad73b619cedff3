"""Shared test configuration. Service fixtures (pg, redis_server, s3, sshd) live in tests/services.py."""

from flyops.toolpath import prefer_venv_tools

pytest_plugins = ["tests.services"]

prefer_venv_tools()  # the same restic as `inv` uses (scripts/setup may put one in .venv/bin)
