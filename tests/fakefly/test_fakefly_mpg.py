"""`fly mpg` in the stand-in (fakefly/mpg.py) against flyctl v0.4.87's source: flags, texts,
JSON shapes, errors, what is mutating, and the PITR hook contract."""

import json
import socket
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fakefly import mpg as fakempg
from fakefly import state as S
from fakefly.testing import FakeFly

FLAGS = json.loads((Path(__file__).parent / "flags.json").read_text())


@pytest.fixture
def mfly(tmp_path):
    return FakeFly(tmp_path / "fly", token="fm2_fakefly_tests")


def create(fly, name="a-db", *extra):
    r = fly.run("mpg", "create", "--name", name, "--org", "personal", "--region", "fra", *extra)
    assert r.rc == 0, r.err
    return fakempg.cluster_named(fly.home, name)


def test_every_mpg_command_has_its_flags_from_source():
    for cmd in ("mpg create", "mpg attach", "mpg status", "mpg destroy", "mpg backup list", "mpg backup create",
                "mpg restore", "mpg list", "mpg proxy"):
        assert cmd in FLAGS and FLAGS[cmd]["flags"], cmd
    assert FLAGS["mpg restore"]["flags"] == ["--backup-id", "--name", "-n", "--pitr-time"]  # restore.go newRestore
    assert FLAGS["mpg destroy"]["aliases"] == ["delete", "remove", "rm"]


def test_older_tokens_are_refused(tmp_path):
    r = FakeFly(tmp_path / "fly").run("mpg", "list", "--org", "personal")
    assert r.rc == 1 and r.err.startswith("Error: MPG commands require updated tokens but found older-style tokens.")
    assert "flyctl auth login" in r.err


def test_list_says_so_when_empty_even_with_json_then_lists(mfly):
    r = mfly.run("mpg", "list", "--org", "personal", "--json")
    assert r.rc == 0 and r.out == "No managed postgres clusters found in organization personal\n"
    c = create(mfly)
    got = mfly.run("mpg", "ls", "-o", "personal", "-j").json()
    assert list(got[0]) == FLAGS["mpg list"]["json_fields"]
    assert got[0]["id"] == c["id"] and got[0]["organization"]["Slug"] == "personal" and got[0]["version"] == 2
    assert mfly.run("mpg", "list", "--org", "personal", "--deleted").out.startswith("No deleted managed postgres")


def test_create_output_plan_fallback_and_errors(mfly):
    r = mfly.run("mpg", "create", "--name", "p-db", "--org", "personal", "--region", "fra", "--plan", "Performance")
    assert r.rc == 0 and "Selected Plan: Basic" in r.out  # normalizePlan lowercases; the key is "Performance"
    c = fakempg.cluster_named(mfly.home, "p-db")
    assert f"  ID: {c['id']}\n" in r.out and f"Connection string: postgresql://fly-user:{c['credentials']['password']}@" in r.out
    assert mfly.run("mpg", "create", "--org", "personal", "--region", "fra").err == \
        "Error: name argument or flag must be specified when not running interactively\n"
    assert mfly.run("mpg", "create", "--name", "x", "--org", "personal").err == "Error: prompt: non interactive\n"
    bad = mfly.run("mpg", "create", "--name", "x", "--org", "personal", "--region", "gru")
    assert bad.rc == 1 and "region gru is not available for Managed Postgres. Available regions: [ams fra" in bad.err
    v = mfly.run("mpg", "create", "--name", "x", "--org", "personal", "--region", "fra", "--pg-major-version", "15")
    assert v.err == "Error: invalid Postgres major version: 15. Supported versions are 16 and 17\n"
    failed = mfly.run("mpg", "create", "--name", "f-db", "--org", "personal", "--region", "fra",
                      env={"FAKEFLY_MPG_FAIL": "f-db"})
    assert failed.rc == 1 and failed.err == "Error: cluster creation failed\n"
    assert fakempg.cluster_named(mfly.home, "f-db")["status"] == "error"  # left behind, as on Fly
    muts = {tuple(e["argv"][:2]) for e in mfly.argv_log() if e["mutating"]}
    assert muts == {("mpg", "create")}


def test_status_json_carries_the_credentials(mfly):
    c = create(mfly)
    got = mfly.run("mpg", "status", c["id"], "--json").json()
    assert set(got) == {"data", "credentials"}
    assert got["credentials"]["password"] == c["credentials"]["password"] and got["data"]["ip_assignments"]["direct"]
    assert mfly.run("mpg", "status", "nope").err == 'Error: managed postgres cluster "nope" not found\n'
    assert mfly.run("mpg", "status").err == "Error: prompt: non interactive\n"


def test_attach_sets_database_url_once(mfly):
    c = create(mfly)
    assert mfly.run("apps", "create", "web", "--org", "personal").rc == 0
    r = mfly.run("mpg", "attach", c["id"], "-a", "web")
    assert r.rc == 0 and "The following secret was added to web:\n  DATABASE_URL=postgresql://fly-user:" in r.out
    st = S.load(mfly.home)
    assert st["apps"]["web"]["secrets"]["DATABASE_URL"]["value"].endswith("/fly-db")
    assert st["mpg"]["clusters"][c["id"]]["attached_apps"][0]["name"] == "web"
    again = mfly.run("mpg", "attach", c["id"], "-a", "web")
    assert again.err == "Error: app web already has DATABASE_URL set. Use 'fly secrets unset DATABASE_URL' to remove it first\n"
    other = mfly.run("mpg", "attach", c["id"], "-a", "web", "--variable-name", "OTHER_URL", "-d", "other")
    assert other.rc == 0 and S.load(mfly.home)["apps"]["web"]["secrets"]["OTHER_URL"]["value"].endswith("/other")
    assert mfly.run("mpg", "attach", "nope", "-a", "web").err == \
        'Error: failed retrieving cluster nope: managed postgres cluster "nope" not found\n'


def test_backups_list_create_and_24h_filter(mfly):
    c = create(mfly)
    assert mfly.run("mpg", "backup", "list", c["id"], "--json").out == f"No backups found for cluster {c['id']}\n"
    old = datetime.now(UTC) - timedelta(days=3)
    fakempg.seed_backup(mfly.home, c["id"], kind="full", start=old, stop=old + timedelta(minutes=3))
    assert "in the last 24 hours (use --all to see all backups)" in mfly.run("mpg", "backup", "list", c["id"]).out
    assert [b["type"] for b in mfly.run("mpg", "backups", "ls", c["id"], "--all", "--json").json()] == ["full"]
    assert mfly.run("mpg", "backup", "create", c["id"], "--type", "diff").err == \
        "Error: --type must be either 'full' or 'incr'\n"
    r = mfly.run("mpg", "backup", "create", c["id"], "--type", "incr")
    assert r.out == f"Creating incr backup for cluster {c['id']}...\nBackup queued successfully!\n"
    got = mfly.run("mpg", "backup", "list", c["id"], "--json").json()
    assert [list(b) for b in got] == [FLAGS["mpg backup list"]["json_fields"]] and got[0]["status"] == "completed"


def test_restore_flag_rules_window_and_hook(mfly, tmp_path):
    c = create(mfly)
    assert mfly.run("mpg", "restore", c["id"]).err == "Error: one of --backup-id or --pitr-time is required\n"
    assert mfly.run("mpg", "restore", c["id"], "--backup-id", "b", "--pitr-time", "2026-01-01T00:00:00Z").err == \
        "Error: --backup-id and --pitr-time are mutually exclusive\n"
    naive = mfly.run("mpg", "restore", c["id"], "--pitr-time", "2026-06-01T12:00:00")
    assert naive.err.startswith("Error: --pitr-time must be an RFC3339 timestamp with an explicit offset")
    t = datetime.now(UTC) - timedelta(days=1)
    bid = fakempg.seed_backup(mfly.home, c["id"], kind="full", start=t, stop=t + timedelta(minutes=1))
    early = (t - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert "outside the recovery window" in mfly.run("mpg", "restore", c["id"], "--pitr-time", early).err
    assert "backup nope not found" in mfly.run("mpg", "restore", c["id"], "--backup-id", "nope").err

    log = tmp_path / "hook.log"
    hook = tmp_path / "hook"
    hook.write_text(f"#!{sys.executable}\nimport json, sys\nopen({str(log)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n"
                    "sys.exit(1 if '--source' in sys.argv and 'fail' in open(sys.argv[0] + '.mode').read() else 0)\n")
    hook.chmod(0o755)
    (tmp_path / "hook.mode").write_text("ok")
    at = (t + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%S+00:00")
    r = mfly.run("mpg", "restore", c["id"], "--pitr-time", at, "-n", "copy-db", env={"FAKEFLY_PITR_HOOK": hook})
    assert r.rc == 0, r.err
    new = fakempg.cluster_named(mfly.home, "copy-db")
    assert r.out.endswith(f"Restore initiated successfully!\n  Cluster ID: {new['id']}\n  Cluster Name: copy-db\n")
    assert new["credentials"] == c["credentials"] and new["status"] == "ready"
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    assert lines == [["restore", "--product", "mpg", "--source", c["id"], "--target", new["id"], "--at", at,
                      "--home", str(mfly.home)]]
    by_id = mfly.run("mpg", "restore", c["id"], "--backup-id", bid, env={"FAKEFLY_PITR_HOOK": hook})
    assert by_id.rc == 0 and json.loads(log.read_text().splitlines()[-1])[-3] == f"backup:{bid}"

    (tmp_path / "hook.mode").write_text("fail")
    bad = mfly.run("mpg", "restore", c["id"], "--backup-id", bid, "--name", "broken-db", env={"FAKEFLY_PITR_HOOK": hook})
    assert bad.rc == 1 and bad.err.startswith("Error: failed to restore cluster:")
    assert fakempg.cluster_named(mfly.home, "broken-db")["status"] == "error"

    # destroy: --yes, then gone from list, the hook told (its failure ignored)
    assert mfly.run("mpg", "destroy", new["id"]).err.endswith("Error: --yes flag must be specified when not running interactively\n")
    d = mfly.run("mpg", "rm", new["id"], "--yes", env={"FAKEFLY_PITR_HOOK": hook})
    assert d.rc == 0 and d.out == f"Managed Postgres cluster copy-db ({new['id']}) scheduled to be destroyed (may take some time)\n"
    assert json.loads(log.read_text().splitlines()[-1]) == ["destroy", "--product", "mpg", "--target", new["id"],
                                                            "--home", str(mfly.home)]
    assert mfly.run("mpg", "destroy", new["id"], "--yes").err == f'Error: managed postgres cluster "{new["id"]}" not found\n'
    muts = sorted({" ".join(e["argv"][:2]) for e in mfly.argv_log() if e["mutating"]})
    assert muts == ["mpg create", "mpg destroy", "mpg restore", "mpg rm"]


def test_proxy_forwards_to_the_mapped_service(mfly):
    c = create(mfly)
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    (mfly.home / "services.json").write_text(json.dumps({f"{c['direct']}:5432": f"127.0.0.1:{srv.getsockname()[1]}"}))
    p = mfly.popen("mpg", "proxy", c["id"], "--local-port", "0")
    try:
        line = p.stdout.readline()
        assert line.startswith("Proxying localhost:") and line.rstrip().endswith(f"to remote [{c['direct']}]:5432")
        port = int(line.split(":")[1].split()[0])
        with socket.create_connection(("127.0.0.1", port)) as client:
            conn, _ = srv.accept()
            client.sendall(b"ping")
            assert conn.recv(4) == b"ping"
            conn.close()
    finally:
        p.terminate()
        p.wait(10)
        srv.close()
    with S.mutate(mfly.home) as st:
        st["mpg"]["clusters"][c["id"]]["status"] = "initializing"
    assert mfly.run("mpg", "proxy", c["id"]).err == "Error: cluster is still initializing, wait a bit more\n"
