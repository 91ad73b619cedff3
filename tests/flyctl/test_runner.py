"""The one runner, against the flyctl stand-in (a real process)."""

import json
import os
import socket
import stat
import threading

import pytest

from flyops.errors import ExitCode, PreconditionFailed
from flyops.flyctl import commands as fly
from flyops.flyctl.importfmt import encode_for_import
from flyops.flyctl.runner import FlyctlError, FlyRunner, free_port
from flyops.secret import MASK, Secret
from tests.helpers import REPO

FAKEFLY = str(REPO / "tests/fakefly/flyctl")


@pytest.fixture
def home(tmp_path):
    return tmp_path / "fly"


def runner(home, **kw) -> FlyRunner:
    env = {"PATH": os.environ["PATH"], "FLYCTL": FAKEFLY, "FLY_API_TOKEN": "tok", "FAKEFLY_HOME": str(home)}
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
