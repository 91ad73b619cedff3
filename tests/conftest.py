"""Shared test configuration. Service fixtures (pg, redis_server, s3, sshd) live in tests/services.py."""

pytest_plugins = ["tests.services"]
