"""Honest state after faults: preconditions before the first change, exit codes that say
whether something changed (README table: 2/4/5 nothing was changed, 8 changed something
first), `plan` and `secrets.diff` that show what a half-done run left, and an audit line with
the real outcome (ok / failed / interrupted) of every mutating task."""

from __future__ import annotations

import json
import signal
import subprocess
import time

from tests.deploy_env import DeployEnv
from tests.helpers import fly_changes, write_env
from tests.tasks.conftest import INV, REPO, STAGING_VALUES
from tests.tasks.test_deploy import _flyctl_deploys_running

APPS = ["cable", "cache", "kredis", "jobs", "web", "worker"]


def audit_entries(ops) -> list[dict]:
    r = ops.inv("audit", "--env", "staging", "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)["entries"]


def test_up_from_a_folder_without_dockerfile_is_refused_before_any_change(ops):
    # project.source = "../my-app", which does not exist next to this copy of the repository
    r = ops.inv("up", "--env", "staging", "--yes")
    assert r.returncode == 2, r.stderr
    assert "has no Dockerfile; nothing was changed" in r.stderr and "--image" in r.stderr
    assert ops.mutations() == []
    r = ops.inv("up", "--env", "staging", "--yes", "--no-deploy")  # provisioning alone needs no source
    assert r.returncode == 0, r.stderr


def test_up_without_a_token_or_flyctl_runs_nothing(ops, tmp_path):
    r = ops.inv("up", "--env", "staging", "--yes", "--no-deploy", FLY_API_TOKEN="")
    assert r.returncode == 5 and "FLY_API_TOKEN" in r.stderr
    r = ops.inv("up", "--env", "staging", "--yes", "--no-deploy", FLYCTL="", PATH=str(tmp_path))
    assert r.returncode == 5 and "flyctl not found" in r.stderr
    assert ops.argv_log() == []


def test_a_failed_up_exits_8_names_what_it_changed_and_is_audited_as_failed(ops):
    r = ops.inv("up", "--env", "staging", "--yes", "--no-deploy",
                FAKEFLY_FAIL_MATCH="^apps create my-app-staging-worker")
    assert r.returncode == 8, r.stderr
    assert "500" in r.stderr and "changed before it stopped" in r.stderr
    assert "fly postgres create --name my-app-staging-db" in r.stderr
    assert "nothing was changed" not in r.stderr
    up = [e for e in audit_entries(ops) if e["task"] == "up"]
    assert len(up) == 1 and up[0]["result"].startswith("failed: ") and "500" in up[0]["result"]
    assert "fly postgres create" in up[0]["changed"]
    # plan sees what is left (the worker app) and that nothing is deployed
    p = ops.inv("plan", "--env", "staging", "--json")
    assert p.returncode == 7
    rows = {(x["component"], x["action"]) for x in json.loads(p.stdout)["rows"] if x["kind"] == "app"}
    assert ("worker", "create") in rows and ("web", "deploy") in rows


def test_an_interrupted_up_says_what_it_changed_and_is_audited(ops):
    proc = subprocess.Popen([str(INV), "--search-root", str(REPO), "up", "--env", "staging", "--yes", "--no-deploy"],
                            env=ops.env(FAKEFLY_LATENCY_MS="400"), text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not fly_changes(ops.argv_log()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert fly_changes(ops.argv_log()), "up made no change within 120 s"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted; changed before it stopped" in err
    up = [e for e in audit_entries(ops) if e["task"] == "up"]
    assert len(up) == 1 and up[0]["result"].startswith("interrupted"), up
    assert "fly postgres create" in up[0]["changed"]


def _create_and_deploy(ops, deployed=("web", "worker")):
    for c in APPS:
        assert ops.fly("apps", "create", f"my-app-staging-{c}", "--org", "personal").returncode == 0
    for c in deployed:
        r = ops.fly("deploy", "--config", str(ops.root / f"fly/staging/{c}.toml"), "--app", f"my-app-staging-{c}",
                    "--image", "registry.fly.io/my-app:1", "--yes")
        assert r.returncode == 0, r.stderr


def test_a_partly_failed_sync_is_reported_per_app_and_audited(ops):
    _create_and_deploy(ops, deployed=())
    r = ops.inv("secrets.sync", "--env", "staging", "--yes",
                FAKEFLY_FAIL_MATCH="^secrets import --app my-app-staging-worker")
    assert r.returncode == 8, r.stderr
    assert "were synced for some apps only" in r.stderr
    assert "my-app-staging-web: staged RAILS_MASTER_KEY" in r.stderr
    assert "my-app-staging-worker: FAILED: `fly secrets import --app my-app-staging-worker --stage` failed" in r.stderr
    sync = [e for e in audit_entries(ops) if e["task"] == "secrets.sync"]
    assert len(sync) == 1 and sync[0]["result"].startswith("failed: ")
    assert "my-app-staging-web: staged" in sync[0]["changed"] and "my-app-staging-worker: FAILED" in sync[0]["changed"]
    for value in STAGING_VALUES.values():
        assert value not in r.stdout + r.stderr + json.dumps(sync)
    r = ops.inv("secrets.diff", "--env", "staging", "--json")
    assert r.returncode == 7
    left = {(x["app"], x["status"]) for x in json.loads(r.stdout)["rows"] if x["status"] not in ("unchanged", "external")}
    assert left == {("my-app-staging-worker", "add")}


def test_a_worker_whose_restart_failed_shows_as_staged_until_a_rerun(ops):
    _create_and_deploy(ops)
    r = ops.inv("secrets.sync", "--env", "staging", "--yes",
                FAKEFLY_FAIL_MATCH="^secrets deploy --app my-app-staging-worker")
    assert r.returncode == 8, r.stderr
    assert "my-app-staging-web: staged RAILS_MASTER_KEY" in r.stderr and "; restarted" in r.stderr
    assert "my-app-staging-worker: staged" in r.stderr and "FAILED: `fly secrets deploy" in r.stderr
    # Fly stores the worker's new values but its machines do not run them: the diff says so
    r = ops.inv("secrets.diff", "--env", "staging", "--json")
    assert r.returncode == 7, r.stderr
    rows = json.loads(r.stdout)["rows"]
    staged = {x["name"] for x in rows if x["status"] == "staged"}
    assert staged and all(x["app"] == "my-app-staging-worker" for x in rows if x["status"] == "staged")
    assert "RAILS_MASTER_KEY" in staged
    assert all(x["status"] in ("unchanged", "external") for x in rows if x["app"] == "my-app-staging-web")
    r = ops.inv("secrets.sync", "--env", "staging", "--yes")
    assert r.returncode == 0, r.stderr
    assert "my-app-staging-worker: restart with the new secrets" in r.stderr
    assert ops.inv("secrets.diff", "--env", "staging").returncode == 0


def test_an_interrupted_deploy_is_audited_with_where_each_app_is(tmp_path):
    env = DeployEnv(tmp_path)
    write_env(env.root, "staging", STAGING_VALUES)
    proc = env.popen("deploy", "--env", "staging", "--image", "registry.fly.io/my-app:1",
                     FAKEFLY_DEPLOY_LATENCY_MS="1500")
    deadline = time.monotonic() + 120
    while _flyctl_deploys_running(env.home) == 0 and time.monotonic() < deadline:  # the stores' wave is in flight
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    entries = json.loads(env.inv("audit", "--env", "staging", "--json").stdout)["entries"]
    assert entries[0]["task"] == "deploy" and entries[0]["result"].startswith("interrupted"), entries
    apps = entries[0]["details"]["apps"]
    assert {c for c, v in apps.items() if v[2] == "deployed"} == {"cable", "cache", "kredis", "jobs"}
    assert apps["web"][2] == "not started" and apps["worker"][2] == "not started"
