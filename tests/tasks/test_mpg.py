"""database.source = "mpg" end to end: `up`, `plan`, `status` and db.backup / db.restore
through `fly mpg proxy` to a real PostgreSQL, against the stand-in's `fly mpg` (fakefly/mpg.py)."""

import json
import sys

import pytest

from flyops.db.sample import seed_sample
from tests.helpers import REPO, edit, write_env
from tests.tasks.conftest import STAGING_VALUES

sys.path.insert(0, str(REPO / "tests" / "fakefly"))
from fakefly import mpg as fakempg  # noqa: E402
from fakefly import state as fakestate  # noqa: E402

#: MPG commands refuse tokens that are not macaroons (mpg.go requireMacaroonToken)
TOKEN = "fm2_fakefly_mpg_tests"
CLUSTER = "my-app-staging-db"


def use_mpg(ops, extra: str = "") -> None:
    edit(ops.root / "fly/stack.toml", '[database]\nsource = "fly"',
         '[database]\nsource = "mpg"\nmpg = { plan = "starter", volume_size_gb = 20' + extra + " }")


def up(ops, *extra, **env):
    return ops.inv("up", "--env", "staging", "--yes", "--no-deploy", *extra, FLY_API_TOKEN=TOKEN, **env)


def test_up_creates_and_attaches_the_cluster_then_converges(ops):
    use_mpg(ops)
    r = up(ops)
    assert r.returncode == 0, r.stderr
    creates = [m for m in ops.mutations() if m[:2] == ["mpg", "create"]]
    assert creates == [["mpg", "create", "--name", CLUSTER, "--org", "personal", "--region", "fra", "--plan", "starter",
                        "--volume-size", "20", "--pg-major-version", "16"]]
    c = fakempg.cluster_named(ops.home, CLUSTER)
    assert c["status"] == "ready" and c["disk"] == 20 and c["plan"] == "starter"
    attaches = [m for m in ops.mutations() if m[:2] == ["mpg", "attach"]]
    assert sorted(m[m.index("--app") + 1] for m in attaches) == ["my-app-staging-web", "my-app-staging-worker"]
    assert all(m[2] == c["id"] for m in attaches)
    st = fakestate.load(ops.home)
    assert "my-app-staging-db" not in st["apps"]  # a Managed Postgres cluster is not an app
    for app in ("web", "worker"):
        url = st["apps"][f"my-app-staging-{app}"]["secrets"]["DATABASE_URL"]["value"]
        assert c["credentials"]["password"] in url
    # flyctl printed the connection string twice (create, attach): never shown, never in argv
    pw = c["credentials"]["password"]
    assert pw not in r.stdout + r.stderr and pw not in (ops.home / "argv.log").read_text()
    # DATABASE_URL is attach's: never pushed with the other secrets
    assert not any("DATABASE_URL" in " ".join(m) for m in ops.mutations() if m[:2] == ["secrets", "import"])

    before = ops.mutations()
    again = up(ops)
    assert again.returncode == 0 and "nothing to do" in again.stderr, again.stderr
    assert ops.mutations() == before  # convergent: no mutating flyctl call

    plan = ops.inv("plan", "--env", "staging", "--json", FLY_API_TOKEN=TOKEN)
    rows = json.loads(plan.stdout)["rows"]
    db = [x for x in rows if x["kind"] == "database"]
    assert db == [{"kind": "database", "component": "db", "app": CLUSTER, "target": c["id"], "action": "keep",
                   "detail": f"{c['id']}: ready, starter, fra, 20 GB"}]
    assert all(x["action"] == "keep" for x in rows if x["target"] == "DATABASE_URL")

    status = ops.inv("status", "--env", "staging", "--json", FLY_API_TOKEN=TOKEN)
    assert status.returncode == 0, status.stderr
    got = json.loads(status.stdout)["database"]
    assert got == {"product": "mpg", "name": CLUSTER, "id": c["id"], "status": "ready", "plan": "starter",
                   "region": "fra", "disk_gb": 20, "attached_apps": ["my-app-staging-web", "my-app-staging-worker"]}
    text = ops.inv("status", "--env", "staging", FLY_API_TOKEN=TOKEN)
    assert f"Managed Postgres {CLUSTER} ({c['id']}): ready" in text.stdout and pw not in text.stdout


def test_plan_before_up_shows_the_cluster_to_create(ops):
    use_mpg(ops, ', region = "iad", postgis = true, pg_major_version = 17')
    plan = ops.inv("plan", "--env", "staging", "--json", FLY_API_TOKEN=TOKEN)
    assert plan.returncode == 7, plan.stderr
    db = [x for x in json.loads(plan.stdout)["rows"] if x["kind"] == "database"]
    assert db == [{"kind": "database", "component": "db", "app": CLUSTER, "target": CLUSTER, "action": "create",
                   "detail": "fly mpg create (starter, iad, 20 GB, Postgres 17, PostGIS)"}]
    dry = ops.inv("--dry", "up", "--env", "staging", "--no-deploy", FLY_API_TOKEN=TOKEN)
    assert dry.returncode == 0, dry.stderr
    assert ("[dry] fly mpg create --name my-app-staging-db --org personal --region iad --plan starter --volume-size 20 "
            "--pg-major-version 17 --enable-postgis-support") in dry.stdout + dry.stderr
    assert not [m for m in ops.mutations()]  # nothing ran


def test_an_interrupted_create_is_waited_for_not_created_again(ops):
    """`mpg create` interrupted after the API made the cluster (flyctl: "the cluster will
    continue provisioning in the background"): the next `up` finds it by name and waits."""
    use_mpg(ops)
    assert ops.fly("mpg", "create", "--name", CLUSTER, "--org", "personal", "--region", "fra",
                   FLY_API_TOKEN=TOKEN).returncode == 0
    cid = fakempg.cluster_named(ops.home, CLUSTER)["id"]
    with fakestate.mutate(ops.home) as st:
        st["mpg"]["clusters"][cid]["status"] = "initializing"
    plan = ops.inv("plan", "--env", "staging", "--json", FLY_API_TOKEN=TOKEN)
    db = [x for x in json.loads(plan.stdout)["rows"] if x["kind"] == "database"][0]
    assert db["action"] == "change" and "waits until it is ready" in db["detail"]
    assert "differs from the stack" in db["detail"] and "plan basic (stack: starter)" in db["detail"]
    with fakestate.mutate(ops.home) as st:  # provisioning finishes while up waits
        st["mpg"]["clusters"][cid]["status"] = "ready"
    r = up(ops)
    assert r.returncode == 0, r.stderr
    assert sum(m[:2] == ["mpg", "create"] for m in ops.mutations()) == 1
    assert {m[2] for m in ops.mutations() if m[:2] == ["mpg", "attach"]} == {cid}


def test_two_clusters_with_the_name_are_refused(ops):
    use_mpg(ops)
    for _ in range(2):
        assert ops.fly("mpg", "create", "--name", CLUSTER, "--org", "personal", "--region", "fra",
                       FLY_API_TOKEN=TOKEN).returncode == 0
    r = up(ops)
    assert r.returncode == 1 and "2 Managed Postgres clusters named 'my-app-staging-db'" in r.stderr
    assert sum(m[:2] != ["mpg", "create"] for m in ops.mutations()) == 0  # nothing changed


def test_a_bearer_token_is_refused_with_flyctls_reason(ops):
    use_mpg(ops)
    r = ops.inv("plan", "--env", "staging")  # the fixture's "test-token" is not a macaroon
    assert r.returncode == 1 and "MPG commands require updated tokens" in r.stderr


@pytest.mark.parametrize("setting, says", [
    ('mpg = { plan = "performance" }', "cannot select the Performance plan non-interactively"),
    ('mpg = { plan = "huge" }', "'huge' is not a Managed Postgres plan: use one of basic, starter, launch, scale"),
    ('mpg = { region = "xyz" }', "'xyz' is not a Fly region code"),
    ('mpg = { pg_major_version = 15 }', "15 is not a Postgres major Managed Postgres offers: use 16 or 17"),
    ('mpg = { volume_size_gb = 0 }', "database.mpg.volume_size_gb"),
    ('mpg = { plna = "basic" }', "database.mpg.plna: unknown key"),
])
def test_bad_mpg_settings_are_exit_2_naming_the_key(ops, setting, says):
    edit(ops.root / "fly/stack.toml", '[database]\nsource = "fly"', f'[database]\nsource = "mpg"\n{setting}')
    r = ops.inv("config.check", "--env", "staging")
    assert r.returncode == 2 and says in r.stderr and "fly/stack.toml:" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


def test_mpg_settings_without_source_mpg_are_refused(ops):
    edit(ops.root / "fly/stack.toml", '[database]\nsource = "fly"', '[database]\nsource = "fly"\nmpg = { plan = "basic" }')
    r = ops.inv("config.check", "--env", "staging")
    assert r.returncode == 2 and '[database.mpg] is set but source = "fly"' in r.stderr


def test_mpg_on_an_environment_without_fly_is_refused(ops):
    edit(ops.root / "fly/local.toml", '[database]\nsource = "url"', '[database]\nsource = "mpg"')
    r = ops.inv("config.check", "--env", "local")
    assert r.returncode == 2 and "environment.fly = false" in r.stderr


def test_backup_and_restore_reach_the_cluster_through_mpg_proxy(ops, pg, make_db):
    use_mpg(ops)
    r = up(ops)
    assert r.returncode == 0, r.stderr
    c = fakempg.cluster_named(ops.home, CLUSTER)
    db = make_db("fly_db")
    seed_sample(pg.url(db).reveal())
    fakempg.set_credentials(ops.home, c["id"], user="postgres", password=pg.password.reveal(), dbname=db)
    (ops.home / "services.json").write_text(json.dumps({f"{c['direct']}:5432": f"127.0.0.1:{pg.port}"}))
    write_env(ops.root, "staging", {**STAGING_VALUES, "RESTIC_PASSWORD": "restic-pw-mpg-7"})

    b = ops.inv("db.backup", "--env", "staging", "--init", "--json", FLY_API_TOKEN=TOKEN)
    assert b.returncode == 0, b.stderr
    manifest = json.loads(b.stdout)
    assert manifest["database"] == db and manifest["tables"]
    proxies = [e["argv"] for e in ops.argv_log() if e["argv"][:2] == ["mpg", "proxy"]]
    assert len(proxies) == 1 and proxies[0][2] == c["id"]

    restored = ops.inv("db.restore", "--env", "staging", "--json", FLY_API_TOKEN=TOKEN)
    assert restored.returncode == 0, restored.stderr
    out = json.loads(restored.stdout)
    assert out["database"].startswith(db) and "_restore_" in out["database"]
    count = "SELECT count(*) FROM users"
    assert pg.psql(count, dbname=out["database"]) == pg.psql(count, dbname=db) != "0"

    # --if-older-than reads the cluster first (the token must work for it)
    skip = ops.inv("db.backup", "--env", "staging", "--if-older-than", "20h", "--json", FLY_API_TOKEN=TOKEN)
    assert skip.returncode == 0 and json.loads(skip.stdout)["skipped"] is True
    for text in (b.stdout + b.stderr, restored.stdout + restored.stderr, (ops.home / "argv.log").read_text()):
        assert pg.password.reveal() not in text


def test_backup_without_a_cluster_says_how_to_make_one(ops):
    use_mpg(ops)
    write_env(ops.root, "staging", {**STAGING_VALUES, "RESTIC_PASSWORD": "restic-pw-mpg-7"})
    r = ops.inv("db.backup", "--env", "staging", "--init", FLY_API_TOKEN=TOKEN)
    assert r.returncode == 1 and "no Managed Postgres cluster named 'my-app-staging-db'" in r.stderr
    assert "inv up --env" in r.stderr


def test_debug_output_never_shows_the_cluster_password(ops, pg, make_db):
    """`inv -d` logs every library at DEBUG: the connection strings `mpg create` and `mpg
    attach` print and the credentials `mpg status --json` returns stay masked."""
    use_mpg(ops)
    outputs = []
    r = ops.inv("-d", "up", "--env", "staging", "--yes", "--no-deploy", FLY_API_TOKEN=TOKEN)
    assert r.returncode == 0, r.stderr
    outputs.append(r.stdout + r.stderr)
    c = fakempg.cluster_named(ops.home, CLUSTER)
    for args in (("plan", "--env", "staging"), ("status", "--env", "staging", "--json")):
        outputs.append((x := ops.inv("-d", *args, FLY_API_TOKEN=TOKEN)).stdout + x.stderr)
    db = make_db("fly_db")
    seed_sample(pg.url(db).reveal())
    fakempg.set_credentials(ops.home, c["id"], user="postgres", password=pg.password.reveal(), dbname=db)
    (ops.home / "services.json").write_text(json.dumps({f"{c['direct']}:5432": f"127.0.0.1:{pg.port}"}))
    write_env(ops.root, "staging", {**STAGING_VALUES, "RESTIC_PASSWORD": "restic-pw-mpg-7"})
    b = ops.inv("-d", "db.backup", "--env", "staging", "--init", FLY_API_TOKEN=TOKEN)
    assert b.returncode == 0, b.stderr
    outputs.append(b.stdout + b.stderr)
    assert "DEBUG" in outputs[0] or "debug" in outputs[0].lower()
    for text in outputs:
        assert c["credentials"]["password"] not in text
        assert pg.password.reveal() not in text and "restic-pw-mpg-7" not in text


def test_config_show_has_the_mpg_settings_and_other_stacks_dump_as_before(ops):
    from flyops.fly.render import render_all
    from flyops.stack.model import load_stack

    before = render_all(load_stack(ops.root, "staging"))
    assert "mpg" not in load_stack(ops.root, "staging").model.model_dump()["database"]
    use_mpg(ops)
    shown = json.loads(ops.inv("config.show", "--env", "staging", "--json").stdout)
    assert shown["database"]["source"] == "mpg"
    assert shown["database"]["mpg"] == {"plan": "starter", "region": None, "volume_size_gb": 20,
                                        "pg_major_version": 16, "postgis": False}
    # no fly.toml holds the database's settings: each file's digest is over its own content
    assert render_all(load_stack(ops.root, "staging")) == before


def test_a_failed_attach_is_finished_by_the_next_run(ops):
    use_mpg(ops)
    r = up(ops, FAKEFLY_FAIL_MATCH="^mpg attach .*my-app-staging-worker")
    assert r.returncode == 8 and "changed before it stopped" in r.stderr, r.stderr
    assert "fly mpg create" in r.stderr  # the change list names what exists now
    st = fakestate.load(ops.home)
    assert "DATABASE_URL" in st["apps"]["my-app-staging-web"]["secrets"]
    assert "DATABASE_URL" not in st["apps"]["my-app-staging-worker"]["secrets"]
    again = up(ops)
    assert again.returncode == 0, again.stderr
    assert sum(m[:2] == ["mpg", "create"] for m in ops.mutations()) == 1
    assert [m[m.index("--app") + 1] for m in ops.mutations() if m[:2] == ["mpg", "attach"]] == [
        "my-app-staging-web", "my-app-staging-worker", "my-app-staging-worker"]  # the failed one, then the retry
    assert "DATABASE_URL" in fakestate.load(ops.home)["apps"]["my-app-staging-worker"]["secrets"]


def test_a_cluster_that_failed_to_provision_stops_up_with_the_fix(ops):
    use_mpg(ops)
    r = up(ops, FAKEFLY_MPG_FAIL=CLUSTER)
    assert r.returncode == 8 and "cluster creation failed" in r.stderr, r.stderr
    c = fakempg.cluster_named(ops.home, CLUSTER)
    again = up(ops)
    assert again.returncode == 1 and f"cluster {c['id']} is in state error" in again.stderr
    assert f"fly mpg destroy {c['id']} --yes" in again.stderr
    assert sum(m[:2] == ["mpg", "create"] for m in ops.mutations()) == 1  # never a second cluster
