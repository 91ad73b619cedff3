"""`inv up` end to end against the stand-in: from nothing, twice, from every failure point."""

import json
import os
import stat
import sys

import pytest

from tests.helpers import REPO, failed_code
from tests.tasks.conftest import STAGING_VALUES

sys.path.insert(0, str(REPO / "tests" / "fakefly"))
from fakefly import state as fakestate  # noqa: E402

STAGING_APPS = {f"my-app-staging-{c}" for c in ("db", "cable", "cache", "kredis", "jobs", "web", "worker")}


def up(ops, env="staging", *extra, **envvars):
    return ops.inv("up", "--env", env, "--yes", "--no-deploy", *extra, **envvars)


def world(ops):
    return fakestate.load(ops.home)


def volumes_by_region(st, app):
    out = {}
    for v in st["apps"][app]["volumes"]:
        if v["state"] == "created":
            out.setdefault((v["name"], v["region"]), []).append(v["id"])
    return out


def assert_staging_complete(ops):
    st = world(ops)
    assert STAGING_APPS <= set(st["apps"])
    for store, vol in (("cable", "keydb_server"), ("cache", "keydb_server"), ("kredis", "keydb_server"), ("jobs", "redis_server")):
        assert {k: len(v) for k, v in volumes_by_region(st, f"my-app-staging-{store}").items()} == {(vol, "fra"): 1}
    for app in ("web", "worker"):
        secrets = st["apps"][f"my-app-staging-{app}"]["secrets"]
        assert "DATABASE_URL" in secrets and secrets["RAILS_MASTER_KEY"]["value"] == STAGING_VALUES["RAILS_MASTER_KEY"]
    assert st["apps"]["my-app-staging-cache"]["secrets"]["KEYDB_PASSWORD"]["value"] == STAGING_VALUES["CACHE_STORE_PASSWORD"]
    assert "my-app-lock-staging" not in st["apps"]  # the lock was released


def test_up_from_nothing_then_a_second_run_changes_nothing(ops):
    r = up(ops)
    assert r.returncode == 0, r.stderr
    assert_staging_complete(ops)
    # the postgres password: saved to the env file (0600), never shown
    envfile = ops.root / "env/staging.env"
    pw = world(ops)["apps"]["my-app-staging-db"]["pg"]["password"]
    assert f"POSTGRES_PASSWORD={pw}\n" in envfile.read_text()
    assert stat.S_IMODE(os.stat(envfile).st_mode) == 0o600
    assert "POSTGRES_PASSWORD" in r.stderr and pw not in r.stdout + r.stderr
    # no value in any argv
    argv = "\n".join(" ".join(e["argv"]) for e in ops.argv_log())
    for value in [*STAGING_VALUES.values(), pw]:
        assert value not in argv and value not in r.stdout + r.stderr
    mutations = ops.mutations()
    assert sum(m[:2] == ["postgres", "create"] for m in mutations) == 1
    assert sorted(m[m.index("--app") + 1] for m in mutations if m[:2] == ["postgres", "attach"]) == [
        "my-app-staging-web", "my-app-staging-worker"]
    assert all("--stage" in m for m in mutations if m[:2] == ["secrets", "import"])
    r = up(ops)
    assert r.returncode == 0 and "nothing to do" in r.stderr
    assert ops.mutations() == mutations  # convergent: zero mutating flyctl calls
    plan = ops.inv("plan", "--env", "staging", "--json")
    pending = [x for x in json.loads(plan.stdout)["rows"] if x["action"] != "keep"]
    # --no-deploy: every app but the database (flyctl starts it) is created and never deployed
    assert plan.returncode == 7
    assert {x["component"] for x in pending if x["action"] == "deploy"} == {"cable", "cache", "kredis", "jobs", "web", "worker"}
    rest = [x for x in pending if x["action"] != "deploy"]
    assert all(x["kind"] == "secret" and x["component"] == "db" for x in rest), rest  # postgres' own secrets


def test_production_gets_exactly_one_volume_per_store_per_region(ops):
    r = up(ops, "production")
    assert r.returncode == 0, r.stderr
    st = world(ops)
    for store, vol in (("cable", "keydb_server"), ("cache", "keydb_server"), ("kredis", "keydb_server"), ("jobs", "redis_server")):
        got = volumes_by_region(st, f"my-app-production-{store}")
        assert {k: len(v) for k, v in got.items()} == {(vol, r): 1 for r in ("fra", "iad", "sin")}
    assert {v["size_gb"] for v in st["apps"]["my-app-production-cache"]["volumes"]} == {2}
    n = len(ops.mutations())
    assert up(ops, "production").returncode == 0 and len(ops.mutations()) == n


def test_up_hands_over_to_deploy_for_apps_never_deployed(ops):
    r = ops.inv("up", "--env", "staging", "--yes", "--image", "registry.fly.io/my-app:1")
    assert r.returncode == 0, r.stderr
    assert "handing over to deploy" in r.stderr
    st = world(ops)
    assert all(st["apps"][a]["deployed"] for a in STAGING_APPS)
    # the stores were built from their rendered folders
    deploys = [m for m in ops.mutations() if m[0] == "deploy"]
    assert any(str(ops.root / "keydb/staging/cable") in m for m in deploys)
    n = len(ops.mutations())
    r = ops.inv("up", "--env", "staging", "--yes", "--image", "registry.fly.io/my-app:1")
    assert r.returncode == 0 and len(ops.mutations()) == n


def test_not_interactive_without_yes_refuses_and_changes_nothing(ops):
    r = ops.inv("up", "--env", "staging", "--no-deploy")
    assert r.returncode == 2 and "--yes" in r.stderr
    assert ops.mutations() == []


def test_dry_run_prints_the_calls_and_changes_nothing(ops):
    r = ops.inv("--dry", "up", "--env", "staging", "--no-deploy")
    assert r.returncode == 0, r.stderr
    assert "[dry] fly postgres create --name my-app-staging-db" in r.stderr
    assert "[dry] fly secrets import --app my-app-staging-web --stage  (values on stdin, not shown)" in r.stderr
    assert ops.mutations() == []


@pytest.mark.parametrize(("args", "says"), [
    (("--env", "prod"), "unknown environment 'prod'"),
    (("--env", "local"), "not deployed to Fly"),
])
def test_bad_environment(ops, args, says):
    r = ops.inv("up", *args, "--yes")
    assert r.returncode == 2 and says in r.stderr
    assert ops.argv_log() == []


def test_missing_env_key_is_named_before_any_flyctl_call(ops):
    path = ops.root / "env/staging.env"
    path.write_text("".join(f"{k}={v}\n" for k, v in STAGING_VALUES.items() if k != "KREDIS_STORE_PASSWORD"))
    r = up(ops)
    assert r.returncode == 2 and "KREDIS_STORE_PASSWORD" in r.stderr
    assert ops.argv_log() == []


# a clean staging run makes ~24 mutating calls (lock, cluster, 6 apps, 4 volumes, 2 attach,
# 6 imports, audit, unlock); cases beyond the real count simply succeed the first time
@pytest.mark.parametrize("fail_at", range(1, 27))
def test_failure_at_every_mutating_step_then_rerun_converges(ops, fail_at):
    r = up(ops, FAKEFLY_FAIL_AT=str(fail_at))
    if r.returncode != 0:  # rc 0: the failing call was best effort (audit line, lock release) or beyond the last
        assert r.returncode == failed_code(ops.argv_log()) and "500" in r.stderr, r.stderr
        assert "inv up --env staging" in r.stderr
    if "my-app-lock-staging" in world(ops)["apps"]:
        assert ops.inv("lock.release", "--env", "staging").returncode == 0  # a stale lock is released by hand
    r = up(ops)
    assert r.returncode == 0, r.stderr
    assert_staging_complete(ops)
    assert sum(m[:2] == ["postgres", "create"] for m in ops.mutations()) <= 2  # at most one failed + one real
    n = len(ops.mutations())
    r = up(ops)
    assert r.returncode == 0 and len(ops.mutations()) == n
