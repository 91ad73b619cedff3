"""Store build folders: rendered content, loaded by a real redis-server through start.sh,
peers.sh's add/remove logic, and the RESP probe behind keydb.status."""

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from flyops.db.scratch import free_port
from flyops.secret import Secret
from flyops.stack import load_stack
from flyops.stores import Resp, RespError, node_status, probe, render_store_dir, stale_store_dirs
from tests.helpers import REPO

HOSTILE_PASSWORD = 'p@ss "quoted" \\back\\slash $HOME #x'


@pytest.fixture
def prod():
    return load_stack(REPO, "production")


def test_keydb_store_renders_every_required_directive(prod):
    files = render_store_dir(prod, "cache")
    conf = files["store.conf"]
    for line in ("dir /data", "save 3600 1", "maxmemory 419430400", "maxmemory-policy allkeys-lru",
                 "bind * -::*", "replica-serve-stale-data yes", "appendonly no"):
        assert f"\n{line}\n" in conf, line
    assert "requirepass" not in conf.replace("requirepass/masterauth", "")  # the password is never in a file
    mm = files["keydb-multimaster.conf"].splitlines()
    directives = [ln for ln in mm if ln and not ln.startswith("#")]
    assert directives == ["active-replica yes", "multi-master yes"]  # and no replicaof at all
    assert "eqalpha/keydb" in files["Dockerfile"] and "peers.sh" in files["Dockerfile"]


def test_jobs_is_redis_noeviction_appendonly_and_valkey_replicates_from_primary(prod):
    jobs = render_store_dir(prod, "jobs")
    assert "\nmaxmemory-policy noeviction\n" in jobs["store.conf"] and "\nappendonly yes\n" in jobs["store.conf"]
    assert "keydb-multimaster.conf" not in jobs and "peers.sh" not in jobs
    assert "FROM redis:7.2" in jobs["Dockerfile"]
    start = jobs["start.sh"]
    assert 'replicaof="replicaof ${PRIMARY_REGION}.${FLY_APP_NAME}.internal 6379"' in start


def test_committed_build_folders_are_fresh():
    for env in ("staging", "production"):
        assert stale_store_dirs(load_stack(REPO, env)) == [], f"run inv keydb.render --env {env}"


def _start(conf_dir: Path, env: dict) -> subprocess.Popen:
    return subprocess.Popen(["sh", str(conf_dir / "start.sh")], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _served_copy(stack, store, tmp_path, port):
    """The rendered folder, with only `dir` and `port` pointed at the test's own."""
    folder = tmp_path / store
    folder.mkdir()
    for name, text in render_store_dir(stack, store).items():
        (folder / name).write_text(text)
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    conf = (folder / "store.conf").read_text()
    (folder / "store.conf").write_text(conf.replace("\ndir /data\n", f"\ndir {data}\n").replace("\nport 6379\n", f"\nport {port}\n"))
    return folder


def _wait(port, password):
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            return probe("127.0.0.1", port, Secret(password))
        except (OSError, RespError):
            time.sleep(0.1)
    raise AssertionError("server did not come up")


@pytest.mark.parametrize("store", ["jobs", "cache"])
def test_start_script_runs_a_real_redis_server_with_the_rendered_config(prod, tmp_path, store):
    server = shutil.which("redis-server")
    assert server, "scripts/setup installs redis-server"
    port = free_port()
    folder = _served_copy(prod, store, tmp_path, port)
    if store == "cache":
        # KeyDB's own directives are split out precisely because redis-server refuses them:
        bad = subprocess.run([server, "-"], input="active-replica yes\n", capture_output=True, text=True, timeout=10)
        assert bad.returncode != 0 and "active-replica" in bad.stdout + bad.stderr
        (folder / "keydb-multimaster.conf").write_text("# KeyDB-only part, not loadable by redis-server\n")
    var = prod.stores[store].secret_name
    env = {"PATH": os.environ["PATH"], "STORE_ENGINE": prod.stores[store].engine, "STORE_CONF_DIR": str(folder),
           "STORE_SERVER": server, "STORE_NO_PEERS": "1", var: HOSTILE_PASSWORD}
    proc = _start(folder, env)
    try:
        info = _wait(port, HOSTILE_PASSWORD)
        want = prod.stores[store]
        row = node_status(prod, store, "fra", info)
        assert row["ok"], row["problems"]
        with Resp("127.0.0.1", port) as r:
            with pytest.raises(RespError, match="NOAUTH"):
                r.call("GET", "x")
            r.call("AUTH", Secret(HOSTILE_PASSWORD))
            cfg = dict(zip(*[iter(r.call("CONFIG", "GET", "*"))] * 2, strict=False))
        assert cfg["maxmemory-policy"] == want.policy
        assert cfg["dir"] == str(tmp_path / "data")
        assert cfg["appendonly"] == ("yes" if store == "jobs" else "no")
        assert cfg["save"].startswith("3600 1")
        assert cfg["bind"] == "* -::*"
        assert cfg["masterauth"] == HOSTILE_PASSWORD  # escaped correctly on the way in
        # the password is not in the server's argv
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes().decode(errors="replace")
        assert "p@ss" not in cmdline
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_start_script_refuses_without_a_password(prod, tmp_path):
    folder = _served_copy(prod, "jobs", tmp_path, free_port())
    r = subprocess.run(["sh", str(folder / "start.sh")], env={"PATH": os.environ["PATH"], "STORE_ENGINE": "redis",
                       "STORE_CONF_DIR": str(folder)}, capture_output=True, text=True, timeout=10)
    assert r.returncode == 1 and "REDIS_PASSWORD secret is not set" in r.stderr


def test_peers_script_adds_new_and_removes_gone_peers(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    dns = tmp_path / "dns"
    calls = tmp_path / "calls"
    (bin_dir / "dig").write_text(f"#!/bin/sh\ncat {dns}\n")
    (bin_dir / "cli").write_text(f'#!/bin/sh\necho "$@" >> {calls}\necho OK\n')
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "FLY_APP_NAME": "my-app-production-cache",
           "FLY_PRIVATE_IP": "fdaa::1", "PEER_STATE": str(tmp_path / "state"), "PEER_CLI": str(bin_dir / "cli"),
           "KEYDB_PASSWORD": "pw"}
    script = REPO / "keydb" / "templates" / "peers.sh"

    def once(addresses):
        dns.write_text("".join(a + "\n" for a in addresses))
        calls.write_text("")
        r = subprocess.run(["sh", str(script), "once"], env=env, capture_output=True, text=True, timeout=10)
        assert r.returncode == 0, r.stderr
        return [line.split(" ", 5)[5] for line in calls.read_text().splitlines()]  # drop "--no-auth-warning -h ::1 -p 6379"

    assert once(["fdaa::1"]) == []  # first node: alone, no replicaof
    assert once(["fdaa::1", "fdaa::2", "fdaa::3"]) == ["REPLICAOF fdaa::2 6379", "REPLICAOF fdaa::3 6379"]
    assert once(["fdaa::1", "fdaa::2", "fdaa::3"]) == []  # nothing new
    assert once(["fdaa::3", "fdaa::1", "fdaa::4"]) == ["REPLICAOF fdaa::4 6379", "REPLICAOF REMOVE fdaa::2 6379"]
    assert sorted((tmp_path / "state").read_text().split()) == ["fdaa::3", "fdaa::4"]
    assert "pw" not in calls.read_text()  # the password goes by REDISCLI_AUTH, not argv
