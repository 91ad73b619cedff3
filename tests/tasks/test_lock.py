"""`inv lock.acquire / lock.status / lock.release` end to end against the stand-in."""

from __future__ import annotations

import json

import pytest

from tests.deploy_env import DeployEnv


@pytest.fixture
def ops(tmp_path):
    return DeployEnv(tmp_path)


def test_acquire_status_release_round_trip(ops):
    p = ops.inv("lock.status", "--env", "staging", "--json")
    assert p.returncode == 0 and json.loads(p.stdout)["held"] is False
    p = ops.inv("lock.acquire", "--env", "staging", "-m", "migrating orders", FLYOPS_OPERATOR="bob@desk")
    assert p.returncode == 0, p.stderr
    assert "held by bob@desk since" in p.stdout
    st = json.loads(ops.inv("lock.status", "--env", "staging", "--json").stdout)
    assert st["app"] == "my-app-lock-staging" and st["held"] is True
    assert (st["holder"]["who"], st["holder"]["reason"], st["holder"]["task"]) == ("bob@desk", "migrating orders", "lock.acquire")
    p = ops.inv("lock.status", "--env", "staging")
    assert "staging: held by bob@desk since" in p.stdout and "'migrating orders'" in p.stdout
    # a second operator is refused, exit 4, naming the holder
    p = ops.inv("lock.acquire", "--env", "staging", "-m", "me too", FLYOPS_OPERATOR="carol@desk")
    assert p.returncode == 4 and "held by bob@desk" in p.stderr and "inv lock.release --env staging" in p.stderr
    # anyone may release (stale locks), and is told whose it was
    p = ops.inv("lock.release", "--env", "staging", FLYOPS_OPERATOR="carol@desk")
    assert p.returncode == 0 and "released the lock held by bob@desk" in p.stdout
    assert json.loads(ops.inv("lock.status", "--env", "staging", "--json").stdout)["held"] is False
    p = ops.inv("lock.release", "--env", "staging")
    assert p.returncode == 0 and "the lock was free" in p.stdout


def test_acquire_needs_a_reason(ops):
    p = ops.inv("lock.acquire", "--env", "staging")
    assert p.returncode == 2 and "needs a reason" in p.stderr
    assert not [r for r in ops.argv_log() if r["mutating"]]


def test_the_holders_own_deploy_runs_under_a_manual_lock_which_stays(ops):
    assert ops.inv("lock.acquire", "--env", "staging", "-m", "release train").returncode == 0
    p = ops.inv("deploy", "--env", "staging", "--only", "web")
    assert p.returncode == 0, p.stderr
    st = json.loads(ops.inv("lock.status", "--env", "staging", "--json").stdout)
    assert st["held"] and st["holder"]["reason"] == "release train"
    p = ops.inv("deploy", "--env", "staging", "--only", "web", FLYOPS_OPERATOR="dave@desk")
    assert p.returncode == 4 and "held by alice@laptop" in p.stderr and "'release train'" in p.stderr
