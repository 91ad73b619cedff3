"""Store build folders: rendered content, loaded by a real redis-server through start.sh,
peers.sh's add/remove logic, and the RESP probe behind keydb.status."""

import json
import os
import shutil
import subprocess
import time
import tomllib
from pathlib import Path

import pytest

from flyops.fly.render import render_component, store_build_dir
from flyops.fly.store_health import Resp, RespError, node_status, parse_info, probe
from flyops.fly.stores import IMAGES, SAVE_LINES, render_store_dir, stale_store_dirs, write_store_dirs
from flyops.procs import free_port
from flyops.secret import Secret
from flyops.stack.model import load_stack
from flyops.units import parse_size
from tests.helpers import REPO, copy_stack

HOSTILE_PASSWORD = 'p@ss "quoted" \\back\\slash $HOME #x'


@pytest.fixture
def prod():
    return load_stack(REPO, "production")


def test_keydb_store_renders_every_required_directive(prod):
    files = render_store_dir(prod, "cache")
    conf = files["store.conf"]
    assert "\ndir $data_dir\ninclude $conf_dir/store.conf\n" in files["start.sh"]
    assert 'data_dir=${STORE_DATA_DIR:-/data}' in files["start.sh"]
    for line in ("save 3600 1", "maxmemory 419430400", "maxmemory-policy allkeys-lru",
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


def test_nothing_under_keydb_is_a_copy_of_a_template_and_the_build_folders_are_not_committed():
    """The store folders are build output (var/build/<env>/<store>/, written by deploy), the
    templates package data: keydb/ holds documentation and the mesh check only."""
    templates = {p.read_bytes() for p in (REPO / "flyops" / "fly" / "store_image").iterdir() if p.is_file()}
    under_keydb = [p for p in (REPO / "keydb").rglob("*") if p.is_file()]
    assert under_keydb and not [p for p in under_keydb if p.read_bytes() in templates]
    assert not [p for p in (REPO / "keydb").iterdir() if p.is_dir()], "keydb/<env>/ folders are generated, not kept"


def test_stale_store_dirs_sees_a_missing_changed_and_extra_file(tmp_path):
    root = copy_stack(tmp_path / "ops")
    stack = load_stack(root, "staging")
    assert {why for _, why in stale_store_dirs(stack)} == {"missing"}
    write_store_dirs(stack)
    assert stale_store_dirs(stack) == []
    conf = store_build_dir(stack, "cache") / "store.conf"
    conf.write_text(conf.read_text() + "maxmemory 1\n")
    (store_build_dir(stack, "cache") / "left-over").write_text("x")
    assert sorted((p.name, why) for p, why in stale_store_dirs(stack)) == [
        ("left-over", "not part of the stack any more (delete it)"), ("store.conf", "stale")]


def _served_copy(stack, store, tmp_path, port=None):
    """The rendered folder, unchanged, as the image has it (`dir` and `port` are given to
    start.sh as STORE_DATA_DIR / STORE_PORT, not edited into store.conf)."""
    folder = tmp_path / store
    folder.mkdir()
    for name, text in render_store_dir(stack, store).items():
        (folder / name).write_text(text)
        if name.endswith(".sh"):
            (folder / name).chmod(0o755)
    return folder


def _tripwires(tmp_path) -> Path:
    """A bin folder put first on PATH whose `sysctl` only records that it was called: a test
    can never change the host's kernel settings, and can see whether start.sh tried."""
    bin_dir = tmp_path / "tripwire-bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "sysctl").write_text(f'#!/bin/sh\necho "$@" >> {tmp_path}/sysctl-calls\n')
    (bin_dir / "sysctl").chmod(0o755)
    return bin_dir


def _store_env(tmp_path, engine, var, password, port, **extra):
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    return {"PATH": f"{_tripwires(tmp_path)}:{os.environ['PATH']}", "STORE_ENGINE": engine,
            "STORE_DATA_DIR": str(data), "STORE_PORT": str(port), var: password, **extra}


def _wait(port, password):
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            return probe("127.0.0.1", port, Secret(password))
        except (OSError, RespError):
            time.sleep(0.1)
    raise AssertionError("server did not come up")


def _argv_holding(secret: str) -> list[str]:
    """Every process on the machine whose argv contains the secret."""
    hits = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if secret in cmdline:
                hits.append(f"{proc.name}: {cmdline.replace(chr(0), ' ')}")
    return hits


def _environ_of(pid: int) -> str:
    return Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")


@pytest.mark.parametrize("store", ["jobs", "cache", "kredis"])
def test_start_script_runs_a_real_redis_server_with_the_rendered_config(prod, tmp_path, store):
    """The rendered store.conf, unchanged, loaded by Debian's redis-server through start.sh.
    KeyDB stores' store.conf is the Redis-compatible part of their config, so it is run with
    STORE_ENGINE=redis here (the KeyDB-only include is the next test, and keydb/mesh-check
    runs the whole thing on a real keydb-server)."""
    server = shutil.which("redis-server")
    assert server, "scripts/setup installs redis-server"
    port = free_port()
    folder = _served_copy(prod, store, tmp_path)
    want = prod.stores[store]
    env = _store_env(tmp_path, "redis", "REDIS_PASSWORD", HOSTILE_PASSWORD, port,
                     STORE_CONF_DIR=str(folder), STORE_SERVER=server)
    proc = subprocess.Popen(["sh", str(folder / "start.sh")], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        info = _wait(port, HOSTILE_PASSWORD)
        row = node_status(prod, store, "fra", info, expected_links=0)
        assert row["ok"], row["problems"]
        with Resp("127.0.0.1", port) as r:
            with pytest.raises(RespError, match="NOAUTH"):
                r.call("GET", "x")
            r.call("AUTH", Secret(HOSTILE_PASSWORD))
            cfg = dict(zip(*[iter(r.call("CONFIG", "GET", "*"))] * 2, strict=False))
        assert cfg["maxmemory-policy"] == want.policy
        assert int(cfg["maxmemory"]) == parse_size(want.maxmemory)
        assert cfg["dir"] == str(tmp_path / "data")
        assert cfg["appendonly"] == ("yes" if want.purpose in ("jobs", "kv") else "no")
        assert cfg["save"] == " ".join(f"{a} {b}" for a, b in SAVE_LINES[want.purpose])
        assert cfg["bind"] == "* -::*"
        assert cfg["masterauth"] == HOSTILE_PASSWORD  # escaped correctly on the way in
        # the password is in no process's argv, and not in the server's environment
        assert _argv_holding("p@ss") == []
        assert Path(f"/proc/{proc.pid}/exe").resolve() == Path(server).resolve()  # start.sh exec'd the server
        assert "p@ss" not in _environ_of(proc.pid)
        assert not (tmp_path / "sysctl-calls").exists()  # not a Fly machine: no sysctl attempted
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_keydb_start_includes_the_multimaster_file_after_store_conf(prod, tmp_path):
    """STORE_ENGINE=keydb with the real files: Debian's redis-server parses all of store.conf,
    then stops at the first KeyDB-only directive of the include (which is the point of the
    split). The KeyDB side of this is checked on a real keydb-server by keydb/mesh-check."""
    folder = _served_copy(prod, "cache", tmp_path)
    env = _store_env(tmp_path, "keydb", "KEYDB_PASSWORD", HOSTILE_PASSWORD, free_port(),
                     STORE_CONF_DIR=str(folder), STORE_SERVER=shutil.which("redis-server"), STORE_NO_PEERS="1")
    r = subprocess.run(["sh", str(folder / "start.sh")], env=env, capture_output=True, text=True, timeout=15)
    out = r.stdout + r.stderr
    assert r.returncode != 0
    assert "'active-replica yes'" in out and "Bad directive or wrong number of arguments" in out, out
    assert "p@ss" not in out


def test_keydb_start_and_peers_loop_put_the_password_in_no_argv(prod, tmp_path):
    """start.sh for KeyDB starts peers.sh in the background (dig, keydb-cli every pass): watch
    every process's argv while that loop runs against a real redis-server as the local node."""
    port = free_port()
    server = subprocess.Popen([shutil.which("redis-server"), "-"], stdin=subprocess.PIPE,
                              stdout=subprocess.DEVNULL, text=True)
    server.stdin.write(f"port {port}\nbind ::1 127.0.0.1\nrequirepass \"{HOSTILE_PASSWORD.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}\"\nsave \"\"\ndir {tmp_path}\n")
    server.stdin.close()
    folder = _served_copy(prod, "cache", tmp_path)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "dig").write_text("#!/bin/sh\nprintf 'fdaa::1\\nfdaa::2\\n'\n")
    (bin_dir / "keydb-cli").symlink_to(shutil.which("redis-cli"))
    (bin_dir / "keydb-server").write_text("#!/bin/sh\nexec sleep 30\n")  # stands still while we watch
    for f in ("dig", "keydb-server"):
        (bin_dir / f).chmod(0o755)
    env = _store_env(tmp_path, "keydb", "KEYDB_PASSWORD", HOSTILE_PASSWORD, port, STORE_CONF_DIR=str(folder),
                     PEER_INTERVAL="0.1", PEER_PORT=str(port), PEER_STATE=str(tmp_path / "state"),
                     FLY_APP_NAME="my-app-production-cache", FLY_PRIVATE_IP="fdaa::1")
    env["PATH"] = f"{env['PATH'].split(':', 1)[0]}:{bin_dir}:{os.environ['PATH']}"
    proc = subprocess.Popen(["sh", str(folder / "start.sh")], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        seen = []
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline:
            seen += _argv_holding("p@ss")
            time.sleep(0.01)
        _wait(port, HOSTILE_PASSWORD)
        with Resp("127.0.0.1", port) as r:
            r.call("AUTH", Secret(HOSTILE_PASSWORD))
            assert parse_info(str(r.call("INFO", "replication")))["master_host"] == "fdaa::2"  # the loop ran
        assert seen == []
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=10)
        server.terminate()
        server.wait(timeout=10)


@pytest.mark.parametrize(("store", "engine"), [("cache", "keydb"), ("kredis", "valkey"), ("jobs", "redis")])
def test_image_entrypoint_is_ours_and_takes_no_arguments(prod, tmp_path, store, engine):
    """The base images' entrypoints are replaced: KeyDB's pkg/docker/Dockerfile (v6.3.4) writes a
    docker-entrypoint.sh that appends `--requirepass "$KEYDB_PASSWORD"`; the official redis and
    valkey images' docker-entrypoint.sh pass CMD through to the server. Docker resets the base
    image's CMD when a Dockerfile sets ENTRYPOINT, so our exec-form ENTRYPOINT is the whole argv."""
    prod.stores[store] = prod.stores[store].model_copy(update={"engine": engine})  # one store per engine
    files = render_store_dir(prod, store)
    assert f"FROM {IMAGES[engine]}" in files["Dockerfile"]
    instructions = [ln.split(None, 1) for ln in files["Dockerfile"].splitlines() if ln and not ln.startswith("#")]
    entry = [rest for op, rest in instructions if op == "ENTRYPOINT"]
    assert entry == ['["/fly/start.sh"]']
    assert json.loads(entry[0]) == ["/fly/start.sh"]
    assert not [op for op, _ in instructions if op in ("CMD", "SHELL")]
    toml = tomllib.loads(render_component(prod, store))
    assert "processes" not in toml and "cmd" not in toml.get("experimental", {}) \
        and "entrypoint" not in toml.get("experimental", {})  # fly.toml does not override it either
    folder = _served_copy(prod, store, tmp_path)
    r = subprocess.run(["sh", str(folder / "start.sh"), "--requirepass", "p@ss"], capture_output=True, text=True,
                       env={"PATH": os.environ["PATH"], "STORE_ENGINE": prod.stores[store].engine}, timeout=10)
    assert r.returncode == 2 and "takes no arguments" in r.stderr and "p@ss" not in r.stderr


def test_sysctl_only_on_a_fly_machine(prod, tmp_path):
    """FLY_MACHINE_ID set (every Fly machine has it): start.sh sets vm.overcommit_memory=1 in
    the machine's own kernel. Here `sysctl` is the tripwire stub, so the host is untouched."""
    folder = _served_copy(prod, "jobs", tmp_path)
    port = free_port()
    env = _store_env(tmp_path, "redis", "REDIS_PASSWORD", "pw", port, STORE_CONF_DIR=str(folder),
                     STORE_SERVER=shutil.which("redis-server"), FLY_MACHINE_ID="e784079b449483",
                     STORE_USER="root")  # the step-down is the next test's
    proc = subprocess.Popen(["sh", str(folder / "start.sh")], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait(port, "pw")
        assert (tmp_path / "sysctl-calls").read_text() == "-w vm.overcommit_memory=1\n"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.mark.skipif(os.geteuid() != 0, reason="the step-down from root needs root")
def test_on_a_fly_machine_the_server_leaves_root_for_the_images_user(prod):
    """Our ENTRYPOINT replaces the base image's, which stepped down from root (KeyDB's
    pkg/docker/Dockerfile: `exec gosu keydb`); start.sh must do it too. Debian's redis-server
    package made the user `redis`, as the redis image has: the server runs as it, and the
    volume's files are handed to it first."""
    import pwd
    import tempfile

    try:
        redis_user = pwd.getpwnam("redis")
    except KeyError:
        pytest.skip("no redis user on this machine")
    top = Path(tempfile.mkdtemp(prefix="flyops-stepdown-", dir="/tmp"))
    top.chmod(0o755)  # the server, once it is `redis`, reads the config and writes /data here
    try:
        folder = _served_copy(prod, "jobs", top)
        port = free_port()
        env = _store_env(top, "redis", "REDIS_PASSWORD", "pw", port, STORE_CONF_DIR=str(folder),
                         STORE_SERVER=shutil.which("redis-server"), FLY_MACHINE_ID="e784079b449483")
        (top / "data" / "old.rdb").write_bytes(b"")  # a file of the volume, owned by root
        proc = subprocess.Popen(["sh", str(folder / "start.sh")], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        try:
            _wait(port, "pw")
            uids = Path(f"/proc/{proc.pid}/status").read_text().split("Uid:")[1].split()[:4]
            assert set(uids) == {str(redis_user.pw_uid)}, uids  # real, effective, saved, fs
            assert Path(f"/proc/{proc.pid}/exe").resolve() == Path(shutil.which("redis-server")).resolve()
            assert (top / "data" / "old.rdb").stat().st_uid == redis_user.pw_uid
        finally:
            proc.terminate()
            proc.wait(timeout=10)
        # a user the image lacks: refused before the server starts
        env["STORE_USER"] = "no-such-user-here"
        r = subprocess.run(["sh", str(folder / "start.sh")], env=env, capture_output=True, text=True, timeout=10)
        assert r.returncode == 1 and "no user 'no-such-user-here'" in r.stderr
    finally:
        shutil.rmtree(top, ignore_errors=True)


def test_start_script_refuses_without_a_password(prod, tmp_path):
    folder = _served_copy(prod, "jobs", tmp_path)
    r = subprocess.run(["sh", str(folder / "start.sh")], env={"PATH": os.environ["PATH"], "STORE_ENGINE": "redis",
                       "STORE_CONF_DIR": str(folder)}, capture_output=True, text=True, timeout=10)
    assert r.returncode == 1 and "REDIS_PASSWORD secret is not set" in r.stderr


# What real dig 9.18 (Debian 12, bind9-dnsutils 1:9.18) prints when the resolver does not answer:
# on STDOUT, exit status 9 (`dig +short aaaa x @::1 -p <a port that never answers> +time=1 +tries=1`).
DIG_TIMEOUT = ";; communications error to fdaa::3#53: timed out\n;; no servers could be reached\n"

# A keydb-cli stand-in for a KeyDB 6.3.4 server with multi-master on, for what redis-server
# cannot do (several masters, REPLICAOF REMOVE). Modelled on KeyDB v6.3.4:
#   replicaofCommand (src/replication.cpp): REPLICAOF host port adds a master, or answers
#     "+OK Already connected to specified master" for a known one; REPLICAOF REMOVE host port
#     drops it or answers "-ERR Master not found";
#   genRedisInfoString (src/server.cpp): role:master with no masters, else role:active-replica
#     (active-replica yes) and master_host, master_1_host, ... one block per master.
# redis-cli without a tty prints an error reply as "ERR ..." and exits 0 (checked with Debian's
# redis-cli 7.0.15); the stand-in does the same.
FAKE_KEYDB_CLI = r"""#!/usr/bin/env python3
import json, os, sys
args = sys.argv[1:]
while args and args[0].startswith("-"):
    args = args[1:] if args[0] == "--no-auth-warning" else args[2:]
path = os.environ["FAKE_KEYDB_STATE"]
masters = json.load(open(path)) if os.path.exists(path) else []
with open(path + ".log", "a") as log:
    log.write(" ".join(args) + "\n")
cmd = [a.upper() for a in args[:2]]
if cmd == ["INFO", "REPLICATION"]:
    print("# Replication\r")
    print("role:%s\r" % ("active-replica" if masters else "master"))
    for i, m in enumerate(masters):
        prefix = "_%d" % i if i else ""
        print("master%s_host:%s\r\nmaster%s_port:6379\r\nmaster%s_link_status:up\r" % (prefix, m, prefix, prefix))
elif cmd[:1] == ["REPLICAOF"] and len(args) == 4 and cmd[1] == "REMOVE":
    if args[2] in masters:
        masters.remove(args[2]); print("OK")
    else:
        print("ERR Master not found")
elif cmd[:1] == ["REPLICAOF"] and len(args) == 3:
    if args[1] in masters:
        print("OK Already connected to specified master")
    else:
        masters.append(args[1]); print("OK")
else:
    print("ERR unknown command")
json.dump(masters, open(path, "w"))
"""

PEERS = REPO / "flyops" / "fly" / "store_image" / "peers.sh"


class PeersRun:
    """peers.sh with a stub dig on PATH (the answer and exit status the test sets) and a cli."""

    def __init__(self, tmp_path, cli, port=6379, password="pw"):
        self.tmp = tmp_path
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir(exist_ok=True)
        self.dns, self.dns_rc, self.calls = tmp_path / "dns", tmp_path / "dns_rc", tmp_path / "dig_calls"
        dig = bin_dir / "dig"
        dig.write_text(f'#!/bin/sh\necho "$@" >> {self.calls}\ncat {self.dns}\nexit $(cat {self.dns_rc})\n')
        dig.chmod(0o755)
        self.env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "FLY_APP_NAME": "my-app-production-cache",
                    "FLY_PRIVATE_IP": "fdaa::1", "PEER_STATE": str(tmp_path / "state"), "PEER_CLI": cli,
                    "PEER_PORT": str(port), "KEYDB_PASSWORD": password,
                    "FAKE_KEYDB_STATE": str(tmp_path / "masters.json")}

    def once(self, answer: str, rc: int = 0) -> str:
        self.dns.write_text(answer)
        self.dns_rc.write_text(str(rc))
        r = subprocess.run(["sh", str(PEERS), "once"], env=self.env, capture_output=True, text=True, timeout=20)
        assert r.returncode == 0, r.stderr
        return r.stderr


def _lines(*addrs):
    return "".join(a + "\n" for a in addrs)


@pytest.fixture
def fake_keydb(tmp_path):
    cli = tmp_path / "keydb-cli"
    cli.write_text(FAKE_KEYDB_CLI)
    cli.chmod(0o755)
    run = PeersRun(tmp_path, str(cli))
    run.masters = lambda: json.loads((tmp_path / "masters.json").read_text()) if (tmp_path / "masters.json").exists() else []
    run.cli_log = lambda: (tmp_path / "masters.json.log").read_text().splitlines() if (tmp_path / "masters.json.log").exists() else []
    return run


def test_peers_first_node_alone_then_adds_peers(fake_keydb):
    fake_keydb.once(_lines("fdaa::1"))
    assert fake_keydb.masters() == []  # first node: serves alone
    fake_keydb.once(_lines("fdaa::1", "fdaa::2", "fdaa::3"))
    assert fake_keydb.masters() == ["fdaa::2", "fdaa::3"]
    asked = [c for c in fake_keydb.cli_log() if c.startswith("REPLICAOF")]
    fake_keydb.once(_lines("fdaa::3", "fdaa::2", "fdaa::1"))
    assert [c for c in fake_keydb.cli_log() if c.startswith("REPLICAOF")] == asked  # nothing new: nothing sent
    assert "+time=2" in fake_keydb.calls.read_text() and "aaaa my-app-production-cache.internal @fdaa::3" in fake_keydb.calls.read_text()


def test_peers_dns_timeout_changes_nothing(fake_keydb):
    fake_keydb.once(_lines("fdaa::1", "fdaa::2", "fdaa::3"))
    before = len(fake_keydb.cli_log())
    for _ in range(5):  # more passes than PEER_REMOVE_AFTER
        err = fake_keydb.once(DIG_TIMEOUT.replace("fdaa::3", "fdaa::3"), rc=9)
        assert "dig exit 9" in err and "timed out" in err
    assert fake_keydb.masters() == ["fdaa::2", "fdaa::3"]
    assert len(fake_keydb.cli_log()) == before  # not even INFO: the pass stops at the failed lookup
    # an empty answer (NOERROR, no records) is not taken as "every peer left" either
    for _ in range(5):
        assert "found no address" in fake_keydb.once("", rc=0)
    # nor is a stdout that holds no IPv6 address, whatever dig's status
    for _ in range(5):
        fake_keydb.once(";; some warning: a:b c\n", rc=0)
    assert fake_keydb.masters() == ["fdaa::2", "fdaa::3"]


def test_peers_only_ipv6_lines_taken(fake_keydb):
    fake_keydb.once(";; Warning: ID mismatch: expected ID 1, got 2\n" + _lines("fdaa::1", "fdaa::2", "10.0.0.1", "host.example."))
    assert fake_keydb.masters() == ["fdaa::2"]


def test_peers_removed_only_after_being_absent_a_while_and_readded(fake_keydb):
    fake_keydb.once(_lines("fdaa::1", "fdaa::2", "fdaa::3"))
    fake_keydb.once(_lines("fdaa::1", "fdaa::3"))  # fdaa::2 restarting: 1st miss
    fake_keydb.once(_lines("fdaa::1", "fdaa::3"))  # 2nd miss
    fake_keydb.once(_lines("fdaa::1", "fdaa::2", "fdaa::3"))  # back in time: kept, count reset
    assert fake_keydb.masters() == ["fdaa::2", "fdaa::3"]
    assert not any("REMOVE" in c for c in fake_keydb.cli_log())
    for _ in range(2):
        fake_keydb.once(_lines("fdaa::1", "fdaa::3"))
    assert fake_keydb.masters() == ["fdaa::2", "fdaa::3"]  # the count started again from 0
    err = fake_keydb.once(_lines("fdaa::1", "fdaa::3"))  # 3rd successful lookup in a row without it
    assert "removed fdaa::2" in err
    assert fake_keydb.masters() == ["fdaa::3"]
    fake_keydb.once(_lines("fdaa::1", "fdaa::2", "fdaa::3"))  # it comes back
    assert sorted(fake_keydb.masters()) == ["fdaa::2", "fdaa::3"]
    assert (fake_keydb.tmp / "state").read_text() == ""  # no counts left behind


def test_peers_reconciled_with_the_servers_list_and_duplicate_answer(fake_keydb):
    (fake_keydb.tmp / "masters.json").write_text(json.dumps(["fdaa::2", "fdaa::9"]))  # e.g. peers.sh restarted
    fake_keydb.once(_lines("fdaa::1", "fdaa::2", "fdaa::3"))
    replicaof = [c for c in fake_keydb.cli_log() if c.startswith("REPLICAOF")]
    assert replicaof == ["REPLICAOF fdaa::3 6379"]  # fdaa::2 is known to the server: not asked again
    for _ in range(2):
        fake_keydb.once(_lines("fdaa::1", "fdaa::2", "fdaa::3"))
    assert fake_keydb.masters() == ["fdaa::2", "fdaa::3"]  # fdaa::9 was never in DNS: removed after 3 passes
    # a REPLICAOF for a known master answers "OK Already connected to specified master":
    r = subprocess.run([fake_keydb.env["PEER_CLI"], "REPLICAOF", "fdaa::2", "6379"], env=fake_keydb.env,
                       capture_output=True, text=True)
    assert r.stdout.strip() == "OK Already connected to specified master"
    fake_keydb.once(_lines("fdaa::1", "fdaa::2", "fdaa::3"))
    assert fake_keydb.masters() == ["fdaa::2", "fdaa::3"]
    assert "pw" not in "".join(fake_keydb.cli_log())  # the password goes by REDISCLI_AUTH, not argv


def test_peers_against_a_real_redis_server(tmp_path):
    """Debian's redis-server: one master only, but the real REPLICAOF answers and INFO fields."""
    server = shutil.which("redis-server")
    assert server, "scripts/setup installs redis-server"
    port = free_port()
    proc = subprocess.Popen([server, "-"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    proc.stdin.write(f"port {port}\nbind ::1\nrequirepass pw\nsave \"\"\ndir {tmp_path}\n")
    proc.stdin.close()
    try:
        run = PeersRun(tmp_path, shutil.which("redis-cli"), port=port)

        def info():
            deadline = time.monotonic() + 10
            while True:
                try:
                    with Resp("::1", port) as r:
                        r.call("AUTH", Secret("pw"))
                        return parse_info(str(r.call("INFO", "replication")))
                except (OSError, RespError):
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)

        assert info()["role"] == "master"
        assert "added fdaa::2 (OK)" in run.once(_lines("fdaa::1", "fdaa::2"))
        assert info()["master_host"] == "fdaa::2" and info()["master_link_status"] == "down"
        # the duplicate: the real server's answer to a second REPLICAOF of the same master
        with Resp("::1", port) as r:
            r.call("AUTH", Secret("pw"))
            assert r.call("REPLICAOF", "fdaa::2", str(port)) == "OK Already connected to specified master"
        err = run.once(_lines("fdaa::1", "fdaa::2"))
        assert "added" not in err  # known to the server: nothing sent
        for _ in range(4):
            run.once(DIG_TIMEOUT, rc=9)
        assert info()["master_host"] == "fdaa::2"  # a DNS timeout removes nothing
        (tmp_path / "state").unlink()  # peers.sh restarted: its counts are gone, the server still knows
        run.once(_lines("fdaa::1"))
        assert (tmp_path / "state").read_text() == "fdaa::2 1\n"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


# INFO lines recorded from KeyDB v6.3.4 built from source (make BUILD_TLS=no), three nodes on
# loopback with active-replica/multi-master and each REPLICAOF the two others; then node 3
# shut down (its link "down", master_global_link_status down), and node 1 filled past
# `CONFIG SET maxmemory 2mb` with noeviction (300 SETs answered OOM).
@pytest.mark.parametrize(("engine", "maxmemory", "memory", "ok"), [
    ("keydb", "204mb", "512mb", True), ("keydb", "205mb", "512mb", False),  # 40% of 512mb is 204.8mb
    ("valkey", "256mb", "512mb", True), ("valkey", "257mb", "512mb", False),
    ("redis", "400mb", "1gb", True), ("keydb", "400mb", "1gb", True), ("keydb", "400mb", "512mb", False),
])
def test_stack_memory_rule_per_engine(engine, maxmemory, memory, ok):
    from pydantic import ValidationError

    from flyops.stack.model import MAXMEMORY_SHARE, Store

    fields = {"engine": engine, "purpose": "cache", "maxmemory": maxmemory, "policy": "allkeys-lru",
              "volume": "v", "env_prefix": "X", "password_key": "X_PASSWORD", "vm": {"memory": memory}}
    if ok:
        Store(**fields)
        return
    with pytest.raises(ValidationError) as err:
        Store(**fields)
    share = f"{MAXMEMORY_SHARE[engine]:.0%}"
    assert f"maxmemory {maxmemory} is more than {share} of vm.memory {memory}" in str(err.value)
    assert "lower maxmemory or raise vm.memory" in str(err.value)


def test_a_jobs_store_is_never_keydb():
    from pydantic import ValidationError

    from flyops.stack.model import Store

    with pytest.raises(ValidationError, match="must not be KeyDB multi-master"):
        Store(engine="keydb", purpose="jobs", maxmemory="100mb", policy="noeviction", volume="v",
              env_prefix="X", password_key="X_PASSWORD")
