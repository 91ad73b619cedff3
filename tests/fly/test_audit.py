"""The audit trail on Fly: one never-started machine per line in <project>-ops-<env>."""

from __future__ import annotations

import pytest

from flyops.fly import audit
from flyops.secret import Secret
from flyops.stack.model import load_stack
from tests.deploy_env import DeployEnv


@pytest.fixture
def env(tmp_path):
    return DeployEnv(tmp_path, seed=False)


def test_record_creates_the_ops_app_once_and_reads_back_newest_first(env, monkeypatch):
    stack = load_stack(env.root, "staging")
    monkeypatch.setenv("FLYOPS_OPERATOR", "carol@ci")
    r = env.runner()
    first = audit.record(stack, r, "deploy", "deployed web v1 -> v2", details={"apps": {"web": [1, 2, "deployed"]}})
    second = audit.record(stack, r, "lock.acquire", "locked staging: freeze")
    assert first and second
    found = audit.entries(stack, env.runner())
    assert [e.task for e in found] == ["lock.acquire", "deploy"]
    e = found[1]
    assert (e.who, e.env, e.changed, e.result) == ("carol@ci", "staging", "deployed web v1 -> v2", "ok")
    assert e.details == {"apps": {"web": [1, 2, "deployed"]}}
    assert audit.last(stack, env.runner(), "deploy").machine_id == e.machine_id
    creates = [r["argv"][:3] for r in env.argv_log() if r["argv"][:2] == ["apps", "create"]]
    assert creates == [["apps", "create", "my-app-ops-staging"]]


def test_no_secret_value_reaches_the_trail(env):
    stack = load_stack(env.root, "staging")
    r = env.runner()
    r.add_masks([Secret("hunter2-very-secret")])
    audit.record(stack, r, "secrets.sync", "set KEY to hunter2-very-secret", details={"note": "hunter2-very-secret"})
    [e] = audit.entries(stack, env.runner())
    assert "hunter2" not in e.changed and "hunter2" not in str(e.details)
    assert "hunter2" not in (env.home / "state.json").read_text()


def test_record_never_raises_it_warns(env):
    stack = load_stack(env.root, "staging")
    r = env.runner(FAKEFLY_FAIL_MATCH="^(machine|apps) create")
    assert audit.record(stack, r, "deploy", "x") is None
    assert any("could not append to the audit trail (my-app-ops-staging)" in line for line in r.lines)


def test_dry_run_records_nothing(env):
    stack = load_stack(env.root, "staging")
    r = env.runner(dry=True)
    assert audit.record(stack, r, "deploy", "deployed web") is None
    assert r.lines == ["[dry] audit: deploy: deployed web (ok)"]
    assert audit.entries(stack, env.runner()) == []


def test_long_text_is_cut_to_fit_metadata():
    e = audit.Entry(at="t", who="w", env="e", task="t", changed="x" * 5000, result="ok")
    assert len(e.metadata()["flyops_changed"]) == audit.MAX_VALUE


def test_prune_keeps_the_newest_lines(env):
    stack = load_stack(env.root, "staging")
    for i in range(4):
        audit.record(stack, env.runner(), "deploy", f"deploy {i}")
    removed = audit.prune_trail(stack, env.runner(), keep=2)
    assert [e.changed for e in removed] == ["deploy 1", "deploy 0"]
    assert [e.changed for e in audit.entries(stack, env.runner())] == ["deploy 3", "deploy 2"]
