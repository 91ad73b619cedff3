"""Choosing rollback targets: from the audit trail's last deploy, or from `releases --json`."""

from __future__ import annotations

import pytest

from flyops.errors import BadInput
from flyops.fly import audit
from flyops.fly.flyctl.runner import FlyRunner
from flyops.fly.rollback import _previous_complete, _release_image, plan_rollback
from flyops.stack.model import load_stack
from tests.deploy_env import DeployEnv


def rel(v, status="complete", image=None):
    return {"Version": v, "Status": status, "ImageRef": image if image is not None else f"img:{v}"}


def test_previous_complete_skips_the_current_and_failed_releases():
    assert _previous_complete([rel(5, "failed"), rel(4, "failed"), rel(3), rel(2)])["Version"] == 3
    assert _previous_complete([rel(5), rel(4, image=""), rel(3)])["Version"] == 3
    assert _previous_complete([rel(1)]) is None
    assert _previous_complete([]) is None


def test_release_image_by_version():
    assert _release_image([rel(2), rel(1)], 1) == "img:1"
    assert _release_image([rel(2)], 7) is None


@pytest.fixture
def env(tmp_path):
    return DeployEnv(tmp_path)


def runner(env):
    return FlyRunner(env=env.environ(), echo=lambda s: None)


def test_default_targets_come_from_the_last_deploy_in_the_audit_trail(env):
    assert env.inv("deploy", "--env", "staging", "--only", "web,cache").returncode == 0
    v1 = {c: env.image(c) for c in ("web", "cache")}
    assert env.inv("deploy", "--env", "staging", "--only", "web,cache").returncode == 0
    stack = load_stack(env.root, "staging")
    targets = plan_rollback(stack, runner(env))
    assert [(t.component, t.version, t.image) for t in targets] == [("cache", 1, v1["cache"]), ("web", 1, v1["web"])]
    assert all(t.needed and t.current_version == 2 for t in targets)


def test_without_a_deploy_in_the_trail_each_app_goes_to_its_previous_good_release(env):
    assert env.inv("deploy", "--env", "staging", "--only", "worker").returncode == 0
    v1 = env.image("worker")
    assert env.inv("deploy", "--env", "staging", "--only", "worker").returncode == 0
    stack = load_stack(env.root, "staging")
    env.fly("apps", "destroy", audit.ops_app(stack), "--yes")  # the trail is gone
    targets = plan_rollback(stack, runner(env))
    assert [(t.component, t.version, t.image) for t in targets] == [("worker", 1, v1)]


def test_bad_targets_are_refused(env):
    stack = load_stack(env.root, "staging")
    with pytest.raises(BadInput, match="the database is not deployed by this repository"):
        plan_rollback(stack, runner(env), app="db")
    with pytest.raises(BadInput, match="unknown app 'nope'"):
        plan_rollback(stack, runner(env), app="nope")
    with pytest.raises(BadInput, match="no earlier successful release"):
        plan_rollback(stack, runner(env), app="web")
