"""flyops/fly/mpg.py: the exact argv of every builder, and MpgBackups against the stand-in's
`fly mpg` (a real process) with a real PostgreSQL behind `mpg proxy`."""

import json
import os
import sys
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from flyops.errors import OpsError
from flyops.fly import mpg
from flyops.fly.flyctl.runner import FlyctlError, FlyRunner
from flyops.fly.pitr import PlatformBackups, RestoredCluster
from flyops.secret import Secret
from tests.helpers import REPO

sys.path.insert(0, str(REPO / "tests" / "fakefly"))
from fakefly import mpg as fakempg  # noqa: E402
from fakefly import state as fakestate  # noqa: E402

FAKEFLY = str(REPO / "tests/fakefly/flyctl")
T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


# --- builders ----------------------------------------------------------------------------


def test_builders_return_flyctls_argv():
    assert mpg.list_clusters("acme").args == ("mpg", "list", "--org", "acme", "--json")
    assert mpg.status("c1").args == ("mpg", "status", "c1", "--json") and not mpg.status("c1").mutating
    c = mpg.create("n", "acme", "fra", plan="basic", volume_size_gb=10, pg_major_version=17, postgis=True)
    assert c.mutating and c.args == ("mpg", "create", "--name", "n", "--org", "acme", "--region", "fra", "--plan",
                                     "basic", "--volume-size", "10", "--pg-major-version", "17",
                                     "--enable-postgis-support")
    a = mpg.attach("c1", "web")
    assert a.args == ("mpg", "attach", "c1", "--app", "web") and a.mutating and a.writes_fly_config
    assert mpg.proxy("c1", 5555).args == ("mpg", "proxy", "c1", "--local-port", "5555", "--bind-addr", "127.0.0.1")
    assert mpg.destroy("c1").args == ("mpg", "destroy", "c1", "--yes")
    assert mpg.backup_list("c1").args == ("mpg", "backup", "list", "c1", "--all", "--json")
    assert mpg.backup_create("c1", "incr").args == ("mpg", "backup", "create", "c1", "--type", "incr")
    at = datetime(2026, 6, 1, 14, 0, tzinfo=UTC)
    assert mpg.restore_call("c1", new_name="x", at=at).args == (
        "mpg", "restore", "c1", "--name", "x", "--pitr-time", "2026-06-01T14:00:00Z")
    assert mpg.restore_call("c1", new_name="x", backup_id="b1").args == ("mpg", "restore", "c1", "--name", "x", "--backup-id", "b1")
    with pytest.raises(ValueError):
        mpg.restore_call("c1", new_name="x")
    with pytest.raises(ValueError):
        mpg.restore_call("c1", new_name="x", at=datetime(2026, 6, 1))  # naive: which zone?
    with pytest.raises(ValueError):
        mpg.backup_create("c1", "diff")


def test_window_from_backups():
    b = [
        {"id": "1", "status": "completed", "type": "full", "start": "2026-11-28T00:00:00Z", "stop": "2026-11-28T00:10:00Z"},
        {"id": "2", "status": "completed", "type": "incr", "start": "2026-11-29T00:00:00Z", "stop": "2026-11-29T00:01:00Z"},
        {"id": "3", "status": "completed", "type": "full", "start": "2026-11-29T06:00:00Z", "stop": "2026-11-29T06:05:00Z"},
        {"id": "4", "status": "running", "type": "incr", "start": "2026-11-30T00:00:00Z", "stop": ""},
        {"id": "5", "status": "failed", "type": "full", "start": "2026-11-30T01:00:00Z", "stop": "2026-11-30T01:02:00Z"},
    ]
    w = mpg.restore_window("c1", b)
    assert (w.product, w.cluster) == ("mpg", "c1")
    assert w.earliest == datetime(2026, 11, 28, 0, 10, tzinfo=UTC)
    assert w.latest == datetime(2026, 11, 29, 6, 5, tzinfo=UTC)
    assert w.last_full == datetime(2026, 11, 29, 6, 5, tzinfo=UTC)
    none = mpg.restore_window("c1", [b[1]])  # an incremental without a full is no restore point
    assert none.earliest is none.latest is none.last_full is None


# --- against the stand-in -------------------------------------------------------------------


@pytest.fixture
def home(tmp_path):
    return tmp_path / "fly"


def runner(home, **env) -> FlyRunner:
    base = {"PATH": os.environ["PATH"], "FLYCTL": FAKEFLY, "FLY_API_TOKEN": "fm2_tests", "FAKEFLY_HOME": str(home),
            "FLY_CONFIG_DIR": str(home / "dot-fly")}
    return FlyRunner(env={**base, **env}, echo=lambda line: None)


@pytest.fixture
def cluster(home):
    r = runner(home)
    cid = mpg.create_mpg_cluster(r, mpg.create("src-db", "personal", "fra", plan="basic", volume_size_gb=10,
                                           pg_major_version=16), org="personal", name="src-db")
    assert cid == fakempg.cluster_named(home, "src-db")["id"]
    return cid


def hook(tmp_path, rc: int = 0):
    """A FAKEFLY_PITR_HOOK that records its arguments (one JSON line per call) and exits rc."""
    log = tmp_path / "hook.log"
    script = tmp_path / "hook"
    script.write_text(f"#!{sys.executable}\nimport json, sys\nopen({str(log)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n"
                      f"sys.exit({rc})\n")
    script.chmod(0o755)
    return str(script), log


def calls(log):
    return [json.loads(x) for x in log.read_text().splitlines()] if log.exists() else []


def test_mpg_backups_is_a_platform_backups(home, cluster):
    backups: PlatformBackups = mpg.MpgBackups(runner(home), cluster, org="personal")
    assert backups.window().earliest is None  # no backup yet: flyctl prints a text, not []


def test_window_restore_connect_destroy(home, cluster, tmp_path, pg):
    fakempg.seed_backup(home, cluster, kind="full", start=T0 - timedelta(days=2),
                        stop=T0 - timedelta(days=2) + timedelta(minutes=4))
    fakempg.seed_backup(home, cluster, kind="incr", start=T0, stop=T0 + timedelta(minutes=1))
    script, log = hook(tmp_path)
    r = runner(home, FAKEFLY_PITR_HOOK=script)
    backups = mpg.MpgBackups(r, cluster, org="personal", interval=0.01)
    w = backups.window()
    assert w.earliest == w.last_full == T0 - timedelta(days=2) + timedelta(minutes=4)
    assert w.latest == T0 + timedelta(minutes=1)

    at = T0 - timedelta(hours=3)
    restored = backups.restore(at=at, new_name="src-db-drill-1")
    assert restored == RestoredCluster("mpg", fakempg.cluster_named(home, "src-db-drill-1")["id"], at)
    assert calls(log) == [["restore", "--product", "mpg", "--source", cluster, "--target", restored.name,
                           "--at", "2026-11-30T09:00:00Z", "--home", str(home)]]
    # latest: the newest completed backup, by id
    by_id = backups.restore(at=None, new_name="src-db-drill-2")
    assert calls(log)[-1][calls(log)[-1].index("--at") + 1].startswith("backup:backup_")
    assert by_id.requested_at is None
    # a name that exists is never restored over
    with pytest.raises(OpsError, match="already exists"):
        backups.restore(at=at, new_name="src-db-drill-1")

    # connect: the admin URL through `mpg proxy`, to the server services.json maps
    c = fakempg.cluster_named(home, "src-db-drill-1")
    fakempg.set_credentials(home, c["id"], user="postgres", password=pg.password.reveal(), dbname="postgres")
    (home / "services.json").write_text(json.dumps({f"{c['direct']}:5432": f"127.0.0.1:{pg.port}"}))
    with backups.connect(restored) as url:
        assert isinstance(url, Secret) and pg.password.reveal() not in repr(url)
        with psycopg.connect(url.reveal()) as conn:
            assert conn.execute("SELECT current_user").fetchone() == ("postgres",)
    proxies = [json.loads(x) for x in (home / "argv.log").read_text().splitlines() if '"proxy"' in x]
    assert [p["exit"] for p in proxies] == [0]  # the tunnel was closed when the block ended (SIGINT: exit 0)

    backups.destroy(restored)
    backups.destroy(restored)  # idempotent: already gone is fine
    assert fakempg.cluster_named(home, "src-db-drill-1") is None
    assert ["destroy", "--product", "mpg", "--target", restored.name, "--home", str(home)] in calls(log)
    assert pg.password.reveal() not in (home / "argv.log").read_text()


def test_a_failed_restore_removes_the_cluster_it_made(home, cluster, tmp_path):
    fakempg.seed_backup(home, cluster, kind="full", start=T0 - timedelta(days=1), stop=T0 - timedelta(days=1))
    script, log = hook(tmp_path, rc=3)
    backups = mpg.MpgBackups(runner(home, FAKEFLY_PITR_HOOK=script), cluster, org="personal")
    with pytest.raises(FlyctlError, match="failed to restore cluster"):
        backups.restore(at=T0 - timedelta(hours=1), new_name="src-db-drill-x")
    assert calls(log)[0][0] == "restore" and calls(log)[-1][0] == "destroy"
    st = fakestate.load(home)
    made = [c for c in st["mpg"]["clusters"].values() if c["name"] == "src-db-drill-x"]
    assert len(made) == 1 and made[0]["deleted"] and made[0]["status"] == "deleted"


def test_restore_outside_the_window_fails_and_leaves_nothing(home, cluster):
    fakempg.seed_backup(home, cluster, kind="full", start=T0, stop=T0 + timedelta(minutes=2))
    backups = mpg.MpgBackups(runner(home), cluster, org="personal")
    with pytest.raises(FlyctlError, match="outside the recovery window"):
        backups.restore(at=T0 - timedelta(days=1), new_name="too-early")
    assert fakempg.cluster_named(home, "too-early") is None
    with pytest.raises(OpsError, match="no completed backup"):
        mpg.MpgBackups(runner(home), mpg.create_mpg_cluster(
            runner(home), mpg.create("empty-db", "personal", "fra", plan="basic", volume_size_gb=10,
                                     pg_major_version=16), org="personal", name="empty-db"),
            org="personal").restore(at=None, new_name="nothing")


def test_wait_ready_fails_on_error_state(home, cluster):
    with fakestate.mutate(home) as st:
        st["mpg"]["clusters"][cluster]["status"] = "error"
    with pytest.raises(OpsError, match="state error"):
        mpg.wait_ready(runner(home), cluster, interval=0.01)
    with fakestate.mutate(home) as st:
        st["mpg"]["clusters"][cluster]["status"] = "initializing"
    with pytest.raises(OpsError, match="still initializing after 0s"):
        mpg.wait_ready(runner(home), cluster, timeout=0.0, interval=0.01)


def test_status_credentials_are_masked_once_read(home, cluster):
    r = runner(home)
    user, password, db = mpg.credentials(r, cluster)
    assert (user, db) == ("fly-user", "fly-db")
    assert password.reveal() not in r.redacted(("x", password.reveal()))
