"""The deploy lock on Fly: atomic acquire by app creation, holder in machine metadata."""

from __future__ import annotations

import pytest

from flyops.fly import lock
from flyops.fly.flyctl.runner import FlyctlError
from flyops.stack.model import load_stack
from tests.deploy_env import DeployEnv


@pytest.fixture
def env(tmp_path):
    return DeployEnv(tmp_path, seed=False)


def test_acquire_records_who_when_why_and_a_second_acquire_is_refused(env, monkeypatch):
    stack = load_stack(env.root, "staging")
    monkeypatch.setenv("FLYOPS_OPERATOR", "alice@laptop")
    me = lock.acquire(stack, env.runner(), "deploy", "ship v7")
    assert lock.lock_app(stack) == "my-app-lock-staging"
    held = lock.holder(stack, env.runner())
    assert held == me and held.who == "alice@laptop" and held.reason == "ship v7" and held.task == "deploy"
    monkeypatch.setenv("FLYOPS_OPERATOR", "bob@desk")
    with pytest.raises(lock.LockHeld) as exc:
        lock.acquire(stack, env.runner(), "deploy", "me too")
    assert exc.value.code == 4 and exc.value.holder == me
    assert "held by alice@laptop since" in exc.value.message and "for deploy: 'ship v7'" in exc.value.message
    # the metadata is plain Fly data: anyone reads it with flyctl
    [m] = env.fly_json("machine", "list", "--app", "my-app-lock-staging")
    assert m["state"] == "created" and m["config"]["metadata"]["flyops_who"] == "alice@laptop"


def test_release_only_releases_our_own_acquisition_when_given_its_id(env):
    stack = load_stack(env.root, "staging")
    me = lock.acquire(stack, env.runner(), "deploy")
    assert lock.release(stack, env.runner(), lock_id="someone-else") == me
    assert lock.holder(stack, env.runner()) == me
    assert lock.release(stack, env.runner(), lock_id=me.lock_id) == me
    assert lock.holder(stack, env.runner()) is None
    assert lock.release(stack, env.runner()) is None


def test_deploy_lock_is_released_when_the_block_fails(env):
    stack = load_stack(env.root, "staging")
    with pytest.raises(RuntimeError):
        with lock.deploy_lock(stack, env.runner(), "deploy", "x"):
            assert lock.holder(stack, env.runner()) is not None
            raise RuntimeError("boom")
    assert lock.holder(stack, env.runner()) is None


def test_a_manual_lock_lets_its_own_operator_deploy_and_stays_held(env, monkeypatch):
    stack = load_stack(env.root, "staging")
    monkeypatch.setenv("FLYOPS_OPERATOR", "alice@laptop")
    mine = lock.acquire(stack, env.runner(), lock.MANUAL_TASK, "freeze")
    with lock.deploy_lock(stack, env.runner(), "deploy") as h:
        assert h == mine
    assert lock.holder(stack, env.runner()) == mine
    monkeypatch.setenv("FLYOPS_OPERATOR", "bob@desk")
    with pytest.raises(lock.LockHeld):
        with lock.deploy_lock(stack, env.runner(), "deploy"):
            pass


def test_a_lock_taken_by_a_deploy_is_exclusive_even_for_its_operator(env):
    stack = load_stack(env.root, "staging")
    lock.acquire(stack, env.runner(), "deploy")
    with pytest.raises(lock.LockHeld):
        with lock.deploy_lock(stack, env.runner(), "deploy"):
            pass


def test_a_lock_app_without_holder_reads_as_being_acquired(env, monkeypatch):
    stack = load_stack(env.root, "staging")
    env.fly("apps", "create", "my-app-lock-staging", "--org", "personal")
    monkeypatch.setattr(lock.time, "sleep", lambda s: None)
    with pytest.raises(lock.LockHeld) as exc:
        lock.acquire(stack, env.runner(), "deploy")
    assert exc.value.holder.who == lock.ACQUIRING and exc.value.holder.since == ""


def test_a_failed_holder_record_gives_the_lock_back(env):
    stack = load_stack(env.root, "staging")
    r = env.runner(FAKEFLY_FAIL_MATCH="^machine create")
    with pytest.raises(FlyctlError) as exc:
        lock.acquire(stack, r, "deploy")
    assert exc.value.call.args[:2] == ("machine", "create")
    assert lock.holder(stack, env.runner()) is None


def test_dry_run_still_refuses_a_held_lock_and_changes_nothing(env):
    stack = load_stack(env.root, "staging")
    dry = env.runner(dry=True)
    lock.acquire(stack, dry, "deploy")
    assert lock.holder(stack, env.runner()) is None
    assert any(line.startswith("[dry] fly apps create my-app-lock-staging") for line in dry.lines)
    lock.acquire(stack, env.runner(), "deploy", "real")
    with pytest.raises(lock.LockHeld):
        lock.acquire(stack, env.runner(dry=True), "deploy")


def test_holder_age_and_description():
    h = lock.Holder(who="a", since="2000-01-01T00:00:00.000Z", reason="why", task="deploy")
    assert h.age().endswith("m") and "h" in h.age()
    assert h.describe().startswith("held by a since 2000-01-01T00:00:00.000Z (")
    assert lock.Holder(who=lock.ACQUIRING, since="", reason="", task="").describe() == f"held by {lock.ACQUIRING}"
