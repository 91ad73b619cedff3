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


def _redis(tmp_path, name, password, *extra_lines):
    """A real Debian redis-server on a free loopback port (its config on stdin)."""
    import shutil
    import subprocess

    from flyops.procs import free_port

    port = free_port()
    data = tmp_path / name
    data.mkdir()
    proc = subprocess.Popen([shutil.which("redis-server"), "-"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            text=True)
    proc.stdin.write("".join(line + "\n" for line in (
        f"port {port}", "bind 127.0.0.1", f"requirepass {password}", f"masterauth {password}", 'save ""',
        f"dir {data}", *extra_lines)))
    proc.stdin.close()
    return proc, port


def test_status_through_fly_proxy_against_real_servers(ops, redis_server, tmp_path):
    """cache in fra: a redis-server started by the rendered start.sh + store.conf (matches the
    stack; staging has one region, so no links are expected); jobs in fra: the shared test
    redis-server (policy/maxmemory differ -> reported)."""
    import shutil
    import subprocess

    from flyops.procs import free_port
    from flyops.stack.model import load_stack
    from tests.fly.test_stores import _served_copy, _store_env, _wait

    stack = load_stack(ops.root, "staging")
    port = free_port()
    folder = _served_copy(stack, "cache", tmp_path)
    password = "cache-pw-Yx8"
    # the KeyDB store's Redis-compatible config, unchanged, on Debian's redis-server
    env = _store_env(tmp_path, "redis", "REDIS_PASSWORD", password, port, STORE_CONF_DIR=str(folder),
                     STORE_SERVER=shutil.which("redis-server"))
    proc = subprocess.Popen(["sh", str(folder / "start.sh")], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
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
        assert node["expected_links"] == 0 and node["rejected_oom"] == 0
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


def test_status_names_an_isolated_region_and_a_down_link(ops, tmp_path):
    """production cache (KeyDB, three regions) on three real redis-servers with real replication
    links: fra replicates from a master that is down (link down, nothing connected: isolated),
    iad from sin (link up, but 1 of the 2 masters a KeyDB mesh node needs), sin alone."""

    from flyops.procs import free_port
    from tests.helpers import write_env
    from tests.tasks.conftest import STAGING_VALUES

    password = STAGING_VALUES["CACHE_STORE_PASSWORD"]
    memory = ["maxmemory 400mb", "maxmemory-policy allkeys-lru"]
    dead = free_port()  # nothing listens there: the master is down
    procs = []
    try:
        sin, sin_port = _redis(tmp_path, "sin", password, *memory)
        procs.append(sin)
        iad, iad_port = _redis(tmp_path, "iad", password, *memory, f"replicaof 127.0.0.1 {sin_port}")
        procs.append(iad)
        fra, fra_port = _redis(tmp_path, "fra", password, *memory, f"replicaof 127.0.0.1 {dead}")
        procs.append(fra)
        write_env(ops.root, "production", STAGING_VALUES)
        assert ops.fly("apps", "create", "my-app-production-cache", "--org", "personal").returncode == 0
        (ops.home / "services.json").write_text(json.dumps({
            f"{region}.my-app-production-cache.internal:6379": f"127.0.0.1:{p}"
            for region, p in (("fra", fra_port), ("iad", iad_port), ("sin", sin_port))}))
        import time

        deadline = time.monotonic() + 20
        while True:  # until iad's real link to sin is up
            r = ops.inv("keydb.status", "--env", "production", "--store", "cache", "--json")
            nodes = {n["region"]: n for n in json.loads(r.stdout)["nodes"]}
            if nodes["iad"].get("masters_up") == 1 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert r.returncode == 7
        assert "fra is isolated: 0 of 2 masters connected" in nodes["fra"]["problems"]
        assert "link to 127.0.0.1 down" in nodes["fra"]["problems"]
        assert nodes["fra"]["links"] == [["127.0.0.1", "down"]]
        assert nodes["iad"]["links"] == [["127.0.0.1", "up"]]
        assert nodes["iad"]["problems"] == ["1 of 2 masters connected"]
        assert nodes["sin"]["problems"] == ["sin is isolated: 0 of 2 masters connected"]
        assert not any(n["ok"] for n in nodes.values())
        r = ops.inv("keydb.status", "--env", "production", "--store", "cache")
        assert r.returncode == 7
        assert "cache in fra, cache in iad, cache in sin" in r.stderr
        assert "127.0.0.1 (down)" in r.stdout and "fra is isolated" in r.stdout
        assert password not in r.stdout + r.stderr
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=10)
