"""`inv keydb.*` end to end against the stand-in."""

import json

import pytest

from tests.helpers import failed_code

PROD_STORES = ["cable", "cache", "kredis", "jobs"]


def create_store_apps(ops, env="production"):
    for store in PROD_STORES:
        assert ops.fly("apps", "create", f"my-app-{env}-{store}", "--org", "personal").returncode == 0


def live_volumes(ops, app):
    r = ops.fly("volumes", "list", "--app", app, "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_volumes_creates_one_per_store_per_region_then_nothing(ops):
    create_store_apps(ops)
    r = ops.inv("keydb.volumes", "--env", "production", "--yes")
    assert r.returncode == 0, r.stderr
    for store in PROD_STORES:
        vols = live_volumes(ops, f"my-app-production-{store}")
        assert sorted(v["region"] for v in vols) == ["fra", "iad", "sin"]
        assert {v["name"] for v in vols} == {"redis_server" if store == "jobs" else "keydb_server"}
    assert {v["size_gb"] for v in live_volumes(ops, "my-app-production-cache")} == {2}
    before = len(ops.mutations())
    assert len(ops.changes()) == 4 + 12  # the four apps, then one volume per store per region (and an audit line)
    r = ops.inv("keydb.volumes", "--env", "production", "--yes")
    assert r.returncode == 0, r.stderr
    assert len(ops.mutations()) == before  # convergent: the second run changes nothing


def test_volumes_store_option_and_extend(ops):
    create_store_apps(ops)
    assert ops.fly("volumes", "create", "keydb_server", "--app", "my-app-production-cache", "--region", "fra",
                   "--size", "1", "--yes").returncode == 0
    r = ops.inv("keydb.volumes", "--env", "production", "--store", "cache", "--yes", "--json")
    assert r.returncode == 0, r.stderr
    steps = json.loads(r.stdout)["steps"]
    assert [(s["region"], s["action"]) for s in steps] == [("fra", "extend"), ("iad", "create"), ("sin", "create")]
    vols = live_volumes(ops, "my-app-production-cache")
    assert len(vols) == 3 and {v["size_gb"] for v in vols} == {2}
    assert all(m[0] == "volumes" and "my-app-production-cache" in m for m in ops.changes()[5:])  # after 4 apps + 1 volume


def test_dry_run_prints_the_calls_and_changes_nothing(ops):
    create_store_apps(ops)
    before = len(ops.mutations())
    r = ops.inv("--dry", "keydb.volumes", "--env", "production")
    assert r.returncode == 0, r.stderr
    assert "[dry] fly volumes create keydb_server --app my-app-production-cable --region sin" in r.stderr
    assert "create" in r.stdout
    assert len(ops.mutations()) == before


def test_not_interactive_without_yes_refuses(ops):
    create_store_apps(ops)
    before = len(ops.mutations())
    r = ops.inv("keydb.volumes", "--env", "production")
    assert r.returncode == 2 and "--yes" in r.stderr
    assert len(ops.mutations()) == before


@pytest.mark.parametrize(("option", "value", "says"), [("--store", "sessions", "--store 'sessions'"),
                                                        ("--region", "ams", "--region 'ams'")])
def test_bad_store_or_region_is_exit_2_and_no_flyctl_call(ops, option, value, says):
    r = ops.inv("keydb.volumes", "--env", "production", option, value, "--yes")
    assert r.returncode == 2 and says in r.stderr
    assert ops.argv_log() == []


def test_missing_store_app_is_a_precondition(ops):
    r = ops.inv("keydb.volumes", "--env", "staging", "--yes")
    assert r.returncode == 5 and "inv up --env staging" in r.stderr
    assert ops.mutations() == []


def test_fault_midway_then_rerun_converges_without_duplicates(ops):
    create_store_apps(ops)
    base, since = len(ops.mutations()), len(ops.argv_log())
    r = ops.inv("keydb.volumes", "--env", "production", "--yes", FAKEFLY_FAIL_AT=str(base + 5))
    assert r.returncode == 8 == failed_code(ops.argv_log(), since) and "500" in r.stderr, r.stderr
    assert "changed before it stopped (4): fly volumes create" in r.stderr
    trail = json.loads(ops.inv("audit", "--env", "production", "--json").stdout)["entries"]
    assert [(e["task"], e["result"][:7]) for e in trail] == [("keydb.volumes", "failed:")]
    assert trail[0]["changed"].startswith("4 change(s): fly volumes create")
    r = ops.inv("keydb.volumes", "--env", "production", "--yes")
    assert r.returncode == 0, r.stderr
    for store in PROD_STORES:
        assert sorted(v["region"] for v in live_volumes(ops, f"my-app-production-{store}")) == ["fra", "iad", "sin"]


def test_status_through_fly_proxy_against_real_servers(ops, redis_server, tmp_path):
    """cache in fra: a redis-server started by the rendered start.sh + store.conf (matches the
    stack); jobs in fra: the shared test redis-server (policy/maxmemory differ -> reported)."""
    import os
    import shutil
    import subprocess

    from flyops.db.scratch import free_port
    from flyops.stack import load_stack
    from tests.test_stores import _served_copy, _wait

    stack = load_stack(ops.root, "staging")
    port = free_port()
    folder = _served_copy(stack, "cache", tmp_path, port)
    (folder / "keydb-multimaster.conf").write_text("# KeyDB-only part left out for redis-server\n")
    password = "cache-pw-Yx8"
    proc = subprocess.Popen(["sh", str(folder / "start.sh")], env={
        "PATH": os.environ["PATH"], "STORE_ENGINE": "keydb", "STORE_CONF_DIR": str(folder),
        "STORE_SERVER": shutil.which("redis-server"), "STORE_NO_PEERS": "1", "KEYDB_PASSWORD": password},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait(port, password)
        values = dict(__import__("tests.tasks.conftest", fromlist=["x"]).STAGING_VALUES)
        values["JOBS_STORE_PASSWORD"] = redis_server.password.reveal()
        path = ops.root / "env/staging.env"
        path.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
        path.chmod(0o600)
        for store in ("cache", "jobs"):
            assert ops.fly("apps", "create", f"my-app-staging-{store}", "--org", "personal").returncode == 0
        (ops.home / "services.json").write_text(json.dumps({
            "my-app-staging-cache.internal:6379": f"127.0.0.1:{port}",
            "fra.my-app-staging-jobs.internal:6379": f"127.0.0.1:{redis_server.port}",
        }))
        r = ops.inv("keydb.status", "--env", "staging", "--store", "cache", "--json")
        assert r.returncode == 0, r.stderr
        (node,) = json.loads(r.stdout)["nodes"]
        assert node["ok"] and node["region"] == "fra" and node["role"] == "master"
        assert node["policy"] == "allkeys-lru" and node["maxmemory"] == 200 * 1024 * 1024
        proxies = [e["argv"] for e in ops.argv_log() if e["argv"][0] == "proxy"]
        assert proxies and proxies[0][2] == "fra.my-app-staging-cache.internal"
        r = ops.inv("keydb.status", "--env", "staging", "--store", "jobs")
        assert r.returncode == 7
        assert "policy noeviction" not in r.stdout  # policy matches (noeviction); maxmemory does not
        assert "maxmemory 0 != stack" in r.stdout
        for v in (password, redis_server.password.reveal()):
            assert v not in r.stdout + r.stderr
    finally:
        proc.terminate()
        proc.wait(timeout=10)
