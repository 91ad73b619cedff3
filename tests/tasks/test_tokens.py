"""Which Fly token a task needs, against the stand-in's token scopes (fakefly/tokens.py, from
flyctl's tokens/create.go): an app-scoped deploy token cannot create apps, list the org's
apps or touch other apps; `up`, the lock and the audit trail need an org token."""

import sys

import pytest

from tests.helpers import REPO

sys.path.insert(0, str(REPO / "tests" / "fakefly"))
from fakefly import state as fakestate  # noqa: E402
from fakefly.tokens import make_token  # noqa: E402


@pytest.fixture
def deploy_token(ops):
    fakestate.seed_app(ops.home, "my-app-staging-web")
    return make_token(ops.home, "app", app="my-app-staging-web")


def _done(ops):
    return [e["argv"] for e in ops.argv_log() if e["mutating"] and e["exit"] == 0]


@pytest.mark.parametrize("task", [
    ("up", "--env", "staging", "--yes", "--no-deploy"),
    ("lock.acquire", "--env", "staging", "-m", "maintenance"),
    ("plan", "--env", "staging"),
])
def test_a_deploy_token_gets_one_clear_message_naming_the_org_token(ops, deploy_token, task):
    """Refused before anything changed (the lock's first call is its own test-and-set
    `apps create`, which Fly refuses), exit 5 rather than 1 or the lock's 4."""
    before = len(_done(ops))
    r = ops.inv(*task, FLY_API_TOKEN=deploy_token)
    assert r.returncode == 5, (r.returncode, r.stderr)
    assert "the Fly token is not allowed to run" in r.stderr and "unauthorized" in r.stderr
    assert "fly tokens create org" in r.stderr
    assert "Traceback" not in r.stderr and deploy_token not in r.stdout + r.stderr
    assert len(_done(ops)) == before


def test_an_org_token_runs_up(ops):
    token = make_token(ops.home, "org", org="personal")
    r = ops.inv("up", "--env", "staging", "--yes", "--no-deploy", FLY_API_TOKEN=token)
    assert r.returncode == 0, r.stderr
    assert "my-app-staging-web" in fakestate.load(ops.home)["apps"]
