"""`inv plan` end to end against the stand-in."""

import json

from tests.tasks.conftest import STAGING_VALUES


def test_plan_of_an_empty_org_wants_everything_and_exits_7(ops):
    r = ops.inv("plan", "--env", "staging", "--json")
    assert r.returncode == 7, r.stderr
    data = json.loads(r.stdout)
    assert data["summary"]["create"] > 0 and data["summary"]["keep"] == 0
    assert {row["app"] for row in data["rows"] if row["kind"] == "app"} >= {"my-app-staging-web", "my-app-staging-db"}
    assert "change(s) pending" in r.stderr
    assert ops.mutations() == []  # plan never changes anything


def test_plan_reads_concurrently_after_the_app_list(ops):
    for app in ("my-app-staging-web", "my-app-staging-cable"):
        assert ops.fly("apps", "create", app, "--org", "personal").returncode == 0
    r = ops.inv("plan", "--env", "staging", "--json")
    assert r.returncode == 7
    log = [e for e in ops.argv_log() if not e["mutating"]]
    assert log[0]["argv"][:2] == ["apps", "list"]
    reads = log[1:]
    assert {tuple(e["argv"][:2]) for e in reads} == {("secrets", "list"), ("volumes", "list")}
    assert len(reads) == 3  # secrets for both apps, volumes for the store
    rows = json.loads(r.stdout)["rows"]
    assert any(r["target"] == "my-app-staging-web" and r["action"] == "deploy" for r in rows)  # created, never deployed


def test_plan_output_never_contains_secret_values(ops):
    r = ops.inv("plan", "--env", "staging")
    for value in STAGING_VALUES.values():
        assert value not in r.stdout + r.stderr


def test_bad_env_is_exit_2_with_the_choices(ops):
    r = ops.inv("plan", "--env", "prod")
    assert r.returncode == 2
    assert "unknown environment 'prod'" in r.stderr and "staging" in r.stderr
    assert ops.argv_log() == []


def test_missing_token_is_a_precondition(ops):
    r = ops.inv("plan", "--env", "staging", FLY_API_TOKEN="")
    assert r.returncode == 5 and "FLY_API_TOKEN" in r.stderr


def test_local_env_is_not_on_fly(ops):
    r = ops.inv("plan", "--env", "local")
    assert r.returncode == 2 and "not deployed to Fly" in r.stderr


def test_plan_after_up_without_deploy_has_the_first_deploys_and_machines_pending(ops):
    up = ops.inv("up", "--env", "staging", "--yes", "--no-deploy")
    assert up.returncode == 0, up.stderr
    # created, never deployed: not converged. Every app but the database waits for its first
    # deploy, and every component lacks its machine in fra; plan says both
    r = ops.inv("plan", "--env", "staging", "--json")
    assert r.returncode == 7, r.stdout + r.stderr
    doc = json.loads(r.stdout)
    assert doc["summary"]["change"] == 0 and doc["summary"]["deploy"] == 6
    rows = [x for x in doc["rows"] if x["action"] == "create"]
    assert {(x["kind"], x["target"]) for x in rows} == {("machine", "fra")} and len(rows) == 6
    up = ops.inv("up", "--env", "staging", "--yes", "--image", "registry.fly.io/my-app:1")
    assert up.returncode == 0, up.stderr
    r = ops.inv("plan", "--env", "staging", "--json")
    assert r.returncode == 0, r.stdout + r.stderr  # deployed and placed: nothing pending
    assert json.loads(r.stdout)["summary"]["create"] == 0
