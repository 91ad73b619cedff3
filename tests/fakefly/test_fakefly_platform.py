"""volumes (§5), proxy (§7), machine run/destroy (§14), postgres (§9), scale count (§15), config validate (§16)."""

import json
import re
import socket
import threading
from pathlib import Path

FLAGS = json.loads((Path(__file__).parent / "flags.json").read_text())


def split_json_objects(text):
    dec = json.JSONDecoder()
    objs, i = [], 0
    while i < len(text):
        if text[i].isspace():
            i += 1
            continue
        obj, i = dec.raw_decode(text, i)
        objs.append(obj)
    return objs


def test_volumes_create_count_concatenated_json(fly):
    fly.run("apps", "create", "web")
    r = fly.run("volumes", "create", "data", "-r", "ams", "-s", "3", "-n", "2", "--json", "-a", "web")
    assert r.rc == 0, r.err
    assert not r.out.startswith("[")
    objs = split_json_objects(r.out)
    assert len(objs) == 2 and r.out.count("}\n{") == 1
    for v in objs:
        assert list(v) == [k for k in FLAGS["volumes create"]["json_fields"] if k != "host_status"]
        assert v["size_gb"] == 3 and v["region"] == "ams" and v["attached_machine_id"] is None
    assert objs[0]["zone"] != objs[1]["zone"]                 # --require-unique-zone default
    listed = fly.run("vol", "ls", "-j", "-a", "web").json()
    assert [v["id"] for v in listed] == [v["id"] for v in objs]


def test_volumes_create_confirmation_and_region(fly):
    fly.run("apps", "create", "web")
    r = fly.run("volumes", "create", "data", "-a", "web", "-r", "ams")
    assert r.rc == 1 and r.err.endswith("Error: yes flag must be specified when not running interactively\n")
    r = fly.run("volumes", "create", "data", "-a", "web", "--yes")
    assert r.err == "Error: region code must be specified when not running interactively\n"
    r = fly.run("volumes", "create", "data", "-a", "web", "--yes", env={"FLY_REGION": "ord"})
    assert r.rc == 0 and "              Region: ord" in r.out


def test_volumes_extend_and_destroy(fly):
    fly.run("apps", "create", "web")
    vid = fly.run("volumes", "create", "data", "-r", "ams", "-y", "-j", "-a", "web").json()["id"]
    assert fly.run("volumes", "extend", vid, "-s", "+2", "-j", "-a", "web").json()["size_gb"] == 3
    assert fly.run("volumes", "extend", vid, "--size", "10gb", "-y", "-j").json()["size_gb"] == 10
    assert fly.run("volumes", "extend", vid, "-s", "12", "-j").json()["size_gb"] == 12
    assert fly.run("volumes", "extend", vid).err == "Error: Volume size must be specified\n"
    r = fly.run("volumes", "destroy", vid, "-y")
    assert r.out == f"Destroyed volume ID: {vid} name: data\n"
    assert fly.run("volumes", "list", "-j", "-a", "web").json() == []
    assert fly.run("volumes", "list", "-j", "--all", "-a", "web").json()[0]["state"] == "pending_destroy"


class Echo:
    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.echo, args=(c,), daemon=True).start()

    def echo(self, c):
        with c:
            while data := c.recv(4096):
                c.sendall(data)


def test_proxy_forwards_real_tcp(fly):
    fly.run("apps", "create", "db")
    echo = Echo()
    (fly.home / "services.json").write_text(json.dumps({"db.internal:5432": f"127.0.0.1:{echo.port}"}))
    p = fly.popen("proxy", "0:5432", "-a", "db", "--quiet")
    try:
        line = p.stdout.readline()
        m = re.fullmatch(r"Proxying localhost:(\d+) to remote \[db\.internal\]:5432\n", line)
        assert m, line
        with socket.create_connection(("127.0.0.1", int(m.group(1))), timeout=5) as c:
            c.sendall(b"ping")
            assert c.recv(10) == b"ping"
    finally:
        p.terminate()
    assert p.wait(5) == 0
    # region / nearest forms fall back to <app>.internal for the same port
    p = fly.popen("proxy", "0:5432", "top1.nearest.of.db.internal", "-a", "db", stdin=-1)
    try:
        line = p.stdout.readline()
        assert line.endswith("to remote [top1.nearest.of.db.internal]:5432\n")
        port = int(line.split(":")[1].split()[0])
        with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
            c.sendall(b"x")
            assert c.recv(10) == b"x"
    finally:
        p.terminate()
        p.wait(5)


def test_proxy_watch_stdin_and_unknown_host(fly):
    fly.run("apps", "create", "db")
    echo = Echo()
    (fly.home / "services.json").write_text(json.dumps({"db.internal:6379": f"127.0.0.1:{echo.port}"}))
    p = fly.popen("proxy", "0:6379", "-a", "db", "--watch-stdin", stdin=-1)
    assert p.stdout.readline().startswith("Proxying localhost:")
    p.stdin.close()
    assert p.wait(5) == 0
    r = fly.run("proxy", "5999", "nowhere.internal", "-a", "db")
    assert r.rc == 1 and "Error: lookup nowhere.internal" in r.err and "no such host" in r.err


def test_machine_run_and_destroy(fly):
    r = fly.run("machine", "run", "busybox", "echo", "hi", "-a", "ghost")
    assert r.err == "Error: prompt: non interactive\n"
    fly.run("apps", "create", "jobs")
    r = fly.run("m", "run", "-a", "jobs", "-r", "ams", "--schedule", "daily", "-e", "A=1", "--", "busybox", "sh", "-c", "echo hi")
    assert r.rc == 0, r.err
    mid = re.search(r"^ Machine ID: (\S+)$", r.out, re.M).group(1)
    m = fly.run("machine", "list", "-j", "-a", "jobs").json()[0]
    assert m["id"] == mid and m["config"]["schedule"] == "daily" and m["config"]["restart"] == {"policy": "on-failure"}
    assert m["config"]["init"]["cmd"] == ["sh", "-c", "echo hi"] and m["config"]["env"] == {"A": "1"}
    # fly m run machines are not Fly Launch machines: status --json leaves them out
    assert fly.run("status", "-j", "-a", "jobs").json()["Machines"] == []
    assert fly.run("machine", "run", "x", "-a", "jobs", "--restart", "sometimes").err == "Error: invalid restart provided\n"
    r = fly.run("machine", "destroy", mid)
    assert r.err == f"Error: machine {mid} currently started, either stop first or use --force flag\n"
    assert fly.run("machine", "stop", mid, "-a", "jobs").out == f"Sending kill signal to machine {mid}...\n{mid} has been successfully stopped\n"
    r = fly.run("machine", "destroy", mid)
    assert r.out == f"machine {mid} was found and is currently in stopped state, attempting to destroy...\n{mid} has been destroyed\n"
    assert fly.run("machine", "destroy", "nope", "-a", "jobs").err == "Error: machine nope was not found in app 'jobs'\n"


def test_postgres_create_attach_list(fly):
    r = fly.run("pg", "list", "--json")
    assert r.out == "No postgres clusters found\n" and "Postgres" in r.err
    r = fly.run("postgres", "create", "--name", "db", "--org", "personal", "--region", "ams",
                "--initial-cluster-size", "2", "--vm-size", "shared-cpu-1x", "--volume-size", "1", "--password", "pw")
    assert r.rc == 0, r.err
    for line in ("Postgres cluster db created", "  Username:    postgres", "  Password:    pw", "  Hostname:    db.internal"):
        assert line in r.out.splitlines()
    assert "Connection string: postgres://postgres:pw@db.flycast:5432" in r.out
    apps = fly.run("pg", "ls", "-j").json()
    assert [a["Name"] for a in apps] == ["db"] and list(apps[0]) == FLAGS["postgres list"]["json_fields"]
    assert len(fly.run("machine", "list", "-j", "-a", "db").json()) == 2
    assert len(fly.run("volumes", "list", "-j", "-a", "db").json()) == 2
    fly.run("apps", "create", "my-web")
    r = fly.run("postgres", "attach", "db", "-a", "my-web", "--yes")
    assert r.rc == 0, r.err
    url = re.search(r"^  DATABASE_URL=(\S+)$", r.out, re.M).group(1)
    assert re.fullmatch(r"postgres://my_web:\w+@db\.flycast:5432/my_web\?sslmode=disable", url)
    assert "The following secret was added to my-web:" in r.out
    r = fly.run("postgres", "attach", "db", "-a", "my-web", "--database-user", "other")
    assert r.rc == 1 and "DATABASE_URL" in r.err
    # attach.go: the database exists -> prompt.Confirm, which fails without a terminal
    r = fly.run("postgres", "attach", "db", "-a", "my-web", "--variable-name", "X_URL")
    assert r.rc == 1 and r.err.endswith("\nError: prompt: non interactive\n")
    r = fly.run("postgres", "attach", "db", "-a", "my-web", "--variable-name", "X_URL", "--yes")
    assert r.rc == 1 and "my_web" in r.err and "already exists" in r.err


def test_postgres_attach_is_check_then_act(fly):
    """postgres/attach.go runAttachCluster: DatabaseExists, then AttachPostgresCluster, then
    CreateDatabase, with nothing held in between. Two attaches of one database at once both
    see "no database"; one CreateDatabase fails after its attachment was registered."""
    import subprocess

    from fakefly import state

    r = fly.run("postgres", "create", "--name", "db", "--org", "personal", "--region", "ams",
                "--initial-cluster-size", "1", "--vm-size", "shared-cpu-1x", "--volume-size", "1")
    assert r.rc == 0, r.err
    for a in ("web", "worker"):
        fly.run("apps", "create", a)
    procs = [fly.popen("postgres", "attach", "db", "-a", a, "--database-name", "shared", "--yes",
                       env={"FAKEFLY_LATENCY_MS": 300}, stdin=subprocess.DEVNULL) for a in ("web", "worker")]
    results = [(p.wait(30), p.stderr.read()) for p in procs]
    assert sorted(rc for rc, _ in results) == [0, 1], results
    assert any('Error: 500: pq: database "shared" already exists' in err for _, err in results)
    pg = state.load(fly.home)["apps"]["db"]["pg"]
    assert len(pg["attachments"]) == 2 and pg["databases"].count("shared") == 1
    with_url = [a for a in ("web", "worker") if "DATABASE_URL" in state.load(fly.home)["apps"][a]["secrets"]]
    assert len(with_url) == 1
    # one after the other, the second sees the database and attaches to it (with --yes)
    loser = ({"web", "worker"} - set(with_url)).pop()
    r = fly.run("postgres", "attach", "db", "-a", loser, "--database-name", "shared", "--database-user", loser + "2", "--yes")
    assert r.rc == 0, r.err
    assert "Creating database" not in r.out


def test_scale_count(fly, tmp_path):
    fly.run("apps", "create", "web")
    (tmp_path / "fly.toml").write_text("app = 'web'\nprimary_region = 'iad'\n[build]\nimage = 'nginx'\n")
    r = fly.run("scale", "count", "2", "-a", "web", "-y")
    assert r.err == "Error: this app has no complete releases. Run `fly deploy` to create one and rerun this command\n"
    assert fly.run("deploy", "--ha=false", cwd=tmp_path).rc == 0
    r = fly.run("scale", "count", "3", "-a", "web")
    assert r.err == "Error: --yes flag must be specified when not running interactively\n"
    r = fly.run("scale", "count", "4", "--region", "iad,ord", "-a", "web", "--yes")
    assert r.rc == 0
    assert r.out.startswith("App 'web' is going to be scaled according to this plan:\n")
    # convergeGroupCounts: round-robin from the first listed region, not "least filled first"
    regions = sorted(m["region"] for m in fly.run("status", "-j", "-a", "web").json()["Machines"])
    assert regions == ["iad", "iad", "iad", "ord"]
    r = fly.run("scale", "count", "4", "-r", "iad,ord", "-a", "web", "-y")
    assert r.out == "App already scaled to desired state. No need for changes\n"
    r = fly.run("scale", "count", "4", "-r", "iad,ord", "--max-per-region", "2", "-a", "web", "-y")
    assert "  -1 machines for group 'app' on region 'iad'" in r.out and "  +1 machines for group 'app' on region 'ord'" in r.out
    regions = sorted(m["region"] for m in fly.run("status", "-j", "-a", "web").json()["Machines"])
    assert regions == ["iad", "iad", "ord", "ord"]
    r = fly.run("scale", "count", "worker=1", "-a", "web", "-y")
    assert r.rc == 1 and "unknown process groups [worker]" in r.err
    assert fly.run("scale", "count", "-y", "-a", "web", "--", "-1").rc == 0
    assert len(fly.run("status", "-j", "-a", "web").json()["Machines"]) == 3


def test_config_validate(fly, tmp_path):
    fly.run("apps", "create", "web")
    good = tmp_path / "fly.toml"
    good.write_text("app = 'web'\n[checks.a]\ninterval = '15s'\n")
    r = fly.run("config", "validate", "-c", str(good))
    assert (r.rc, r.out) == (0, f"Validating {good}\n✓ Configuration is valid\n\n")
    bad = tmp_path / "bad.toml"
    bad.write_text("app = 'web'\n[checks.a]\ninterval = '1s'\n")
    r = fly.run("config", "validate", "--config", str(bad))
    assert r.rc == 1 and "✘" in r.out and r.err == "Error: App configuration is not valid\n"
    strict = tmp_path / "strict.toml"
    strict.write_text("app = 'web'\nbogus = 1\n")
    assert fly.run("config", "validate", "-c", str(strict)).rc == 0
    r = fly.run("config", "validate", "-c", str(strict), "--strict")
    assert r.rc == 1 and "  - bogus" in r.out and r.err == "Error: strict validation failed\n"


PG_CREATE = ("postgres", "create", "--name", "pgx", "--org", "personal", "--region", "ams",
             "--initial-cluster-size", "2", "--vm-size", "shared-cpu-1x", "--volume-size", "1")


def test_postgres_create_prints_the_password_last_and_not_at_all_if_the_watch_fails(fly):
    """flypg/launcher.go LaunchMachinesPostgres: secrets set, machines launched and started,
    checks watched (unless --detach), and only then `Password:`. A failed watch exits 1 with
    the cluster created: a re-run sees the name taken, and the password is never shown."""
    from fakefly import state

    r = fly.run(*PG_CREATE, env={"FAKEFLY_UNHEALTHY": "pgx"})
    assert r.rc == 1 and "Password:" not in r.out and "context deadline exceeded" in r.err
    assert r.out.splitlines()[-1] == "==> Monitoring health checks"
    st = state.load(fly.home)["apps"]["pgx"]
    assert len(st["machines"]) == 2 and "OPERATOR_PASSWORD" in st["secrets"]
    assert fly.run(*PG_CREATE).rc == 1  # the name is taken now
    # what is left: the password is an app secret, in every machine's environment
    mid = st["machines"][0]["id"]
    r = fly.run("ssh", "console", "-a", "pgx", "--machine", mid, "-C", "printenv OPERATOR_PASSWORD")
    assert r.rc == 0 and r.out == st["pg"]["password"] + "\n"


def test_postgres_create_detach_skips_only_the_watch(fly):
    r = fly.run(*PG_CREATE, "--detach", env={"FAKEFLY_UNHEALTHY": "pgx"})
    assert r.rc == 0, r.err
    lines = r.out.splitlines()
    assert "==> Monitoring health checks" not in lines and lines.count("Waiting for machine to start...") == 2
    assert any(line.startswith("  Password:    ") for line in lines)
