"""The one runner, against the flyctl stand-in (a real process)."""

import json
import os
import socket
import stat
import threading

import pytest

from flyops.errors import ExitCode, PreconditionFailed
from flyops.fly.flyctl import commands as fly
from flyops.fly.flyctl.importfmt import encode_for_import
from flyops.fly.flyctl.runner import FlyctlError, FlyRunner
from flyops.procs import free_port
from flyops.secret import MASK, Secret
from tests.helpers import REPO

FAKEFLY = str(REPO / "tests/fakefly/flyctl")


@pytest.fixture
def home(tmp_path):
    return tmp_path / "fly"


def runner(home, **kw) -> FlyRunner:
    env = {"PATH": os.environ["PATH"], "FLYCTL": FAKEFLY, "FLY_API_TOKEN": "tok", "FAKEFLY_HOME": str(home),
           "FLY_CONFIG_DIR": str(home / "dot-fly")}
    env.update(kw.pop("env", {}))
    lines: list[str] = []
    r = FlyRunner(env=env, echo=lines.append, **kw)
    r.lines = lines  # type: ignore[attr-defined]
    return r


def argv_log(home):
    return [json.loads(x) for x in (home / "argv.log").read_text().splitlines()]


def test_json_reads_and_mutations(home):
    r = runner(home)
    assert r.json(fly.apps_list("personal")) == []
    app = r.json(fly.apps_create("demo-app", "personal"))
    assert app["Name"] == "demo-app"
    assert [a["Name"] for a in r.json(fly.apps_list("personal"))] == ["demo-app"]
    assert len(r.mutations) == 1 and len(r.records) == 3


def test_dry_runs_reads_and_prints_mutations(home):
    r = runner(home, dry=True)
    r.json(fly.apps_list("personal"))
    assert r.json(fly.apps_create("demo-app", "personal")) is None
    assert r.lines == ["[dry] fly apps create demo-app --org personal --json"]
    assert [e["argv"][:2] for e in argv_log(home)] == [["apps", "list"]]


def test_errors_carry_flyctls_message(home):
    r = runner(home)
    with pytest.raises(FlyctlError) as exc:
        r.run(fly.status("no-such-app"))
    assert exc.value.code == ExitCode.FAILURE
    assert "fly status --app no-such-app --json" in exc.value.message
    assert "no-such-app" in exc.value.message.split("failed:")[1]


def test_empty_postgres_list_quirk_is_an_empty_list(home):
    assert runner(home).json(fly.postgres_list()) == []


def test_secret_on_stdin_never_in_argv_and_masked_in_output(home):
    r = runner(home, verbose=True)
    r.json(fly.apps_create("demo-app", "personal"))
    value = "s3cr3t-#-'\"-value"
    r.add_masks([Secret(value)])
    r.run(fly.secrets_import("demo-app", encode_for_import({"TOKEN": Secret(value)}), stage=True))
    assert value not in (home / "argv.log").read_text()
    assert all(value not in line for line in r.lines)



def test_child_output_is_masked_before_anyone_sees_it(home):
    r = runner(home)
    r.json(fly.apps_create("demo-app", "personal"))
    r.add_masks([Secret("demo-app")])  # pretend the app name were a secret flyctl echoes back
    out = r.run(fly.apps_list("personal")).stdout
    assert "demo-app" not in out and MASK in out


def test_token_is_required_and_never_passed_in_argv(home):
    with pytest.raises(PreconditionFailed, match="FLY_API_TOKEN"):
        runner(home, env={"FLY_API_TOKEN": ""}).run(fly.apps_list("personal"))
    runner(home).run(fly.apps_list("personal"))
    assert all("tok" not in a for e in argv_log(home) for a in e["argv"])


def test_binary_resolution_order(tmp_path, home):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for name in ("fly", "flyctl"):
        p = bindir / name
        p.write_text("#!/bin/sh\nexit 0\n")
        p.chmod(p.stat().st_mode | stat.S_IEXEC)
    env = {"PATH": f"{bindir}:/usr/bin:/bin", "FLY_API_TOKEN": "t"}
    assert FlyRunner(env={**env, "FLYCTL": FAKEFLY}).resolve_binary() == FAKEFLY
    assert FlyRunner(env=env).resolve_binary() == str(bindir / "flyctl")
    (bindir / "flyctl").unlink()
    assert FlyRunner(env=env).resolve_binary() == str(bindir / "fly")
    (bindir / "fly").unlink()
    with pytest.raises(PreconditionFailed, match="flyctl not found"):
        FlyRunner(env=env).resolve_binary()


def test_proxy_waits_for_readiness_and_forwards_real_tcp(home):
    r = runner(home)
    r.json(fly.apps_create("db-app", "personal"))
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def echo_once():
        conn, _ = server.accept()
        with conn:
            conn.sendall(conn.recv(100).upper())

    threading.Thread(target=echo_once, daemon=True).start()
    (home / "services.json").write_text(json.dumps({"db-app.internal:5432": f"127.0.0.1:{port}"}))
    local = free_port()
    with r.start_proxy(fly.proxy("db-app", local, 5432)) as proxy:
        assert proxy.local_port == local
        with socket.create_connection(("127.0.0.1", local), timeout=5) as c:
            c.sendall(b"ping")
            assert c.recv(100) == b"PING"
    assert not proxy.proc.is_alive()
    server.close()


def test_proxy_failure_is_reported(home):
    r = runner(home)
    r.json(fly.apps_create("db-app", "personal"))
    with pytest.raises(FlyctlError, match="no such host"):
        r.start_proxy(fly.proxy("db-app", free_port(), 5432, host="nowhere.internal"), timeout=20)


# -- flyctl's config.yml: writers one at a time (appsecrets/minvers.go, config/file.go) -------------


def _intervals(home, verb):
    rows = [json.loads(line) for line in (home / "argv.log").read_text().splitlines()]
    return sorted((r["t"], r["t"] + r["duration"]) for r in rows if r["argv"][: len(verb)] == verb)


def _overlaps(iv):
    return sum(1 for (a, b), (c, d) in zip(iv, iv[1:], strict=False) if c < b)


def test_config_writers_never_overlap_and_no_minvers_entry_is_lost(home):
    """Six imports from six threads: flyctl would rewrite the whole app_secrets_minvers map
    from its start-up snapshot, so overlapping processes lose entries (the stand-in models it;
    tests/fakefly/test_fakefly_flyconfig.py). The runner runs them one at a time."""
    import sys

    sys.path.insert(0, str(REPO / "tests/fakefly"))
    from fakefly import flyconfig, state

    r = runner(home, env={"FAKEFLY_LATENCY_MS": "150"})
    apps = [f"app{i}" for i in range(6)]
    for a in apps:
        state.seed_app(home, a)
    threads = [threading.Thread(target=r.run, args=(fly.secrets_import(a, encode_for_import({"K": Secret("v")}),
                                                                          stage=True),)) for a in apps]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert flyconfig.read_minvers(home / "dot-fly") == {a: 1 for a in apps}
    assert _overlaps(_intervals(home, ["secrets", "import"])) == 0


def test_deploys_and_reads_stay_concurrent(home, tmp_path):
    """Only the writers queue: reads (and deploys, which only read config.yml) overlap."""
    import sys

    sys.path.insert(0, str(REPO / "tests/fakefly"))
    from fakefly import state

    r = runner(home, env={"FAKEFLY_LATENCY_MS": "300"})
    for i in range(4):
        state.seed_app(home, f"app{i}")
    threads = [threading.Thread(target=r.json, args=(fly.secrets_list(f"app{i}"),)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert _overlaps(_intervals(home, ["secrets", "list"])) >= 1


def test_writers_lock_lives_in_flyctls_config_dir(home, tmp_path):
    from flyops.fly.flyctl.runner import fly_config_dir

    assert fly_config_dir({"FLY_CONFIG_DIR": "/x/y", "HOME": "/h"}) == __import__("pathlib").Path("/x/y")
    assert fly_config_dir({"HOME": "/h"}) == __import__("pathlib").Path("/h/.fly")
    for call in (fly.secrets_import("a", Secret("K=v\n"), stage=True), fly.secrets_unset("a", ["K"], stage=True),
                 fly.postgres_attach("db", "a", "a"), fly.apps_destroy("a"),
                 fly.postgres_create("db", "o", "fra", cluster_size=1, vm_size="x", volume_size_gb=1)):
        assert call.writes_fly_config, call.args
    for call in (fly.secrets_deploy("a"), fly.secrets_list("a"), fly.apps_create("a", "o")):
        assert not call.writes_fly_config, call.args


def test_token_from_a_file_or_a_systemd_credential(home, tmp_path):
    import sys

    sys.path.insert(0, str(REPO / "tests/fakefly"))
    from fakefly import state

    state.seed_app(home, "a")
    f = tmp_path / "tok"
    f.write_text("file-token\n")
    f.chmod(0o600)
    r = runner(home, env={"FLY_API_TOKEN": "", "FLY_API_TOKEN_FILE": str(f)})
    assert r.json(fly.status("a"))["Name"] == "a"
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "fly-api-token").write_text("cred-token")
    (creds / "fly-api-token").chmod(0o400)
    r = runner(home, env={"FLY_API_TOKEN": "", "CREDENTIALS_DIRECTORY": str(creds)})
    assert r.json(fly.status("a"))["Name"] == "a"
    f.chmod(0o640)
    with pytest.raises(PreconditionFailed, match="readable by group or others"):
        runner(home, env={"FLY_API_TOKEN": "", "FLY_API_TOKEN_FILE": str(f)}).run(fly.status("a"))
    with pytest.raises(PreconditionFailed, match="cannot read"):
        runner(home, env={"FLY_API_TOKEN": "", "FLY_API_TOKEN_FILE": str(tmp_path / "nope")}).run(fly.status("a"))
    argv = (home / "argv.log").read_text()
    assert "file-token" not in argv and "cred-token" not in argv


def test_a_refused_token_is_exit_5_with_the_fix_and_other_failures_stay_exit_1(home):
    import sys

    sys.path.insert(0, str(REPO / "tests/fakefly"))
    from fakefly import state
    from fakefly.tokens import make_token

    from flyops.fly.flyctl.runner import TokenRefused

    state.seed_app(home, "a")
    tok = make_token(home, "app", app="a")
    with pytest.raises(TokenRefused) as exc:
        runner(home, env={"FLY_API_TOKEN": tok}).run(fly.apps_create("b", "personal"))
    assert exc.value.code == ExitCode.PRECONDITION and "fly tokens create org" in str(exc.value)
    with pytest.raises(FlyctlError) as exc:
        runner(home, env={"FLY_API_TOKEN": tok}).run(fly.status("missing"))
    assert exc.value.code == ExitCode.PRECONDITION  # another app: refused too
    with pytest.raises(FlyctlError) as exc:
        runner(home).run(fly.status("missing"))
    assert not isinstance(exc.value, TokenRefused) and exc.value.code == ExitCode.FAILURE


def test_write_text_writes_atomically_only_when_the_content_differs(tmp_path, home):
    r = runner(home)
    path = tmp_path / "a" / "b" / "web.toml"
    assert r.write_text(path, "x = 1\n", shown="web.toml") == "written"
    assert path.read_text() == "x = 1\n" and stat.S_IMODE(path.stat().st_mode) == 0o644
    path.chmod(0o600)
    assert r.write_text(path, "x = 1\n") == "unchanged"
    assert r.write_text(path, "x = 2\n") == "updated"
    assert path.read_text() == "x = 2\n" and stat.S_IMODE(path.stat().st_mode) == 0o600  # its mode is kept
    assert r.write_text(tmp_path / "start.sh", "#!/bin/sh\n", mode=0o755) == "written"
    assert stat.S_IMODE((tmp_path / "start.sh").stat().st_mode) == 0o755
    assert sorted(p.name for p in path.parent.iterdir()) == ["web.toml"]  # no temp file left
    assert r.changes() == ["written web.toml", f"updated {path}", f"written {tmp_path / 'start.sh'}"]


def test_write_text_under_dry_prints_and_touches_nothing(tmp_path, home):
    r = runner(home, dry=True)
    path = tmp_path / "new" / "web.toml"
    assert r.write_text(path, "x = 1\n", shown="fly/staging/web.toml") == "written"
    assert r.lines == ["[dry] write fly/staging/web.toml (6 bytes, would be written)"]
    assert not path.parent.exists() and r.changes() == []


def test_changes_are_successful_mutations_without_bookkeeping(home):
    r = runner(home)
    r.run(fly.apps_create("my-app-lock-staging", "personal"), bookkeeping=True)
    r.run(fly.apps_create("my-app-staging-web", "personal"))
    r.run(fly.apps_list("personal"))
    with pytest.raises(FlyctlError):
        r.run(fly.apps_create("my-app-staging-web", "personal"))  # taken: failed, changed nothing
    assert r.changes() == ["fly apps create my-app-staging-web --org personal --json"]
