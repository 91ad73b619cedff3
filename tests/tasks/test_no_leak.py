"""Nothing leaks at any verbosity: every task, run with Invoke's `-d` (DEBUG for every logger
of every library in the process), with canary values for every secret, against the flyctl
stand-in and a real PostgreSQL and restic repository. Every byte of stdout and stderr, every
file written in the repository copy and the TMPDIR the runs use, and the stand-in's logs
(argv.log, events.jsonl) are searched for the canaries.

The canary marker starts every value, so a *prefix* of a value (the `sh` library logs the
first 30 bytes of each stdin chunk) is caught as well as a whole one."""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from pathlib import Path

import psycopg
import pytest

from flyops.db.sample import seed_sample
from tests.helpers import write_env

MARK = "CNRY"  # in no file of this repository, no flyctl output, no PostgreSQL message


def canary(tag: str) -> str:
    return f"{MARK}{tag}-q7Zp"


FLY_VALUES = {
    "RAILS_MASTER_KEY": canary("rmk"),
    "CABLE_STORE_PASSWORD": canary("cable"),
    "CACHE_STORE_PASSWORD": canary("cache"),
    "KREDIS_STORE_PASSWORD": canary("kredis"),
    "JOBS_STORE_PASSWORD": canary("jobs"),
    "RESTIC_PASSWORD": canary("restic"),
    "AWS_ACCESS_KEY_ID": canary("awsid"),
    "AWS_SECRET_ACCESS_KEY": canary("awskey"),
}
TOKEN = canary("token")
PG_ROLE_PASSWORD = canary("pgpw")
LOCAL_RESTIC = canary("restic-local")


def runs(ops, local_url: str, bad_url: str) -> list[tuple[tuple[str, ...], set[int]]]:
    """(argv after `inv -d`, accepted exit codes): every task in `inv --list` that can run
    here. Left out: `demo` (its secrets are generated, not given, so there is no canary to
    look for; its drill is the `dr.drill` below)."""
    image = "registry.fly.io/my-app:1"
    return [
        (("config.show", "--env", "staging", "--json"), {0}),
        (("config.show", "--env", "staging"), {0}),
        (("config.render", "--env", "staging"), {0}),
        (("config.check", "--env", "staging"), {0}),
        (("keydb.render", "--env", "staging"), {0}),
        (("plan", "--env", "staging"), {7}),
        (("secrets.diff", "--env", "staging"), {7}),
        (("up", "--env", "staging", "--yes", "--image", image), {0}),
        (("plan", "--env", "staging", "--json"), {0}),
        (("status", "--env", "staging"), {0}),
        (("keydb.volumes", "--env", "staging", "--yes"), {0}),
        (("keydb.status", "--env", "staging", "--store", "cache"), {7}),  # no store behind the proxy: rows, exit 7
        (("deploy", "--env", "staging", "--image", image, "--verbose"), {0}),
        (("rollback", "--env", "staging", "--app", "web", "--to", "v1"), {0, 2}),
        (("lock.acquire", "--env", "staging", "-m", "leak test"), {0}),
        (("lock.status", "--env", "staging", "--json"), {0}),
        (("lock.release", "--env", "staging"), {0}),
        (("audit", "--env", "staging"), {0}),
        (("schedule.show", "--env", "staging"), {0}),
        (("schedule.fly", "--env", "production", "--image", "registry.fly.io/my-app-backup:1", "--yes"), {0}),
        (("ci.workflows", "--ops-repo", "acme/my-app-ops", "--out", str(ops.root / "workflows")), {0}),
        (("db.init", "--env", "local"), {0}),
        (("db.backup", "--env", "local", "--reason", "leak test", "--json"), {0}),
        (("db.backup", "--env", "local"), {0}),
        (("db.list", "--env", "local"), {0}),
        (("db.verify", "--env", "local", "--level", "integrity"), {0}),
        (("db.restore", "--env", "local", "--json"), {0}),
        (("db.prune", "--env", "local"), {0}),
        (("dr.drill", "--env", "local", "--json"), {0}),
        # a password typed on the command line: Invoke's own -d log prints the parsed options
        (("db.restore", "--env", "local", "--to", bad_url), {1}),
    ]


@pytest.fixture
def leaky(ops, pg, make_db):
    db = make_db("leak")
    with psycopg.connect(pg.url().reveal(), autocommit=True) as c:
        c.execute(f"CREATE ROLE leak_role LOGIN CREATEDB PASSWORD '{PG_ROLE_PASSWORD}'")
        c.execute(f'ALTER DATABASE "{db}" OWNER TO leak_role')
    url = f"postgresql://leak_role:{PG_ROLE_PASSWORD}@127.0.0.1:{pg.port}/{db}"
    seed_sample(url)
    write_env(ops.root, "local", {"DATABASE_URL": url, "RESTIC_PASSWORD": LOCAL_RESTIC})
    write_env(ops.root, "staging", FLY_VALUES)
    write_env(ops.root, "production", {**FLY_VALUES, "POSTGRES_PASSWORD": canary("pgprod")})
    # the TMPDIR of the runs: outside pytest's 0700 folders, since the drill's scratch server
    # runs as the unprivileged postgres user and must reach its folder in it
    tmp = Path(tempfile.mkdtemp(prefix="flyops-leak-"))
    tmp.chmod(0o777)
    yield ops, url, tmp
    shutil.rmtree(tmp, ignore_errors=True)
    with psycopg.connect(pg.url().reveal(), autocommit=True) as c:
        for (name,) in c.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (f"{db}%",)).fetchall():
            c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        c.execute("DROP ROLE IF EXISTS leak_role")


def found_in(data: bytes, values: list[str]) -> list[str]:
    hits = [v for v in values if v.encode() in data]
    return hits + ([f"marker {MARK}"] if MARK.encode() in data and not hits else [])


def test_debug_output_of_every_task_holds_no_secret(leaky):
    ops, url, tmp = leaky
    bad_url = f"postgresql://leak_role:{canary('typed')}@127.0.0.1:1/x"
    leaks, outputs = [], []
    for argv, ok in runs(ops, url, bad_url):
        r = ops.inv("-d", *argv, FLY_API_TOKEN=TOKEN, TMPDIR=str(tmp))
        assert r.returncode in ok, f"inv -d {' '.join(argv)}: exit {r.returncode}\n{r.stderr[-3000:]}"
        assert "invoke.program" in r.stderr, "-d did not turn on debug logging"
        outputs += [(f"inv -d {' '.join(argv)}: stdout", r.stdout), (f"inv -d {' '.join(argv)}: stderr", r.stderr)]
        if argv[0] == "up":
            # a value changed after `up`: the `secrets.sync` below imports it (stdin with a canary)
            write_env(ops.root, "staging", {**FLY_VALUES, "RAILS_MASTER_KEY": canary("rmk2"),
                                            "POSTGRES_PASSWORD": _generated_postgres_password(ops) or ""})
            r = ops.inv("-d", "secrets.sync", "--env", "staging", "--yes", FLY_API_TOKEN=TOKEN, TMPDIR=str(tmp))
            assert r.returncode == 0, r.stderr[-3000:]
            outputs += [("inv -d secrets.sync: stdout", r.stdout), ("inv -d secrets.sync: stderr", r.stderr)]
    generated = _generated_postgres_password(ops)
    assert generated, "up recorded no POSTGRES_PASSWORD: the path that saves it was not exercised"
    for where, text in outputs:
        for hit in found_in(text.encode(), [generated]):
            line = next((ln for ln in text.splitlines() if MARK in ln or generated in ln), "")
            leaks.append(f"{where}: {hit}: {line[:300]}")
    # the stand-in holds the values (as Fly does) in its state, but logs none
    files = [p for p in (ops.home / "argv.log", ops.home / "events.jsonl") if p.exists()]
    files += [p for p in ops.root.rglob("*") if p.is_file() and p.parent.name != "env"]
    files += [p for p in tmp.rglob("*") if p.is_file()]
    for path in files:
        data = path.read_bytes()
        for hit in found_in(data, [generated]):
            leaks.append(f"{path.relative_to(path.anchor)}: {hit}")
    assert not leaks, "\n".join(leaks)
    assert len(files) > 40, [str(f) for f in files]  # the runs wrote what they should (workflows, reports, repo)


def test_the_sync_under_debug_really_sent_a_canary_on_stdin(leaky):
    """The leak test above means something only if values did travel on a child's stdin
    while sh's DEBUG log was on: check that Fly (the stand-in) received the canary."""
    ops, _, tmp = leaky
    r = ops.inv("-d", "up", "--env", "staging", "--yes", "--no-deploy", FLY_API_TOKEN=TOKEN, TMPDIR=str(tmp))
    assert r.returncode == 0, r.stderr[-2000:]
    state = json.loads((ops.home / "state.json").read_text())
    assert state["apps"]["my-app-staging-web"]["secrets"]["RAILS_MASTER_KEY"]["value"] == FLY_VALUES["RAILS_MASTER_KEY"]
    assert "sh.command" in r.stderr and MARK not in r.stdout + r.stderr


def _generated_postgres_password(ops) -> str | None:
    text = (ops.root / "env" / "staging.env").read_text()
    m = re.search(r"^POSTGRES_PASSWORD=(.+)$", text, re.M)
    return m.group(1).strip().strip("'\"") if m else None


def test_the_canaries_are_not_in_the_repository():
    """The marker must be unique to this test, or the grep above could not tell a leak."""
    root = Path(__file__).resolve().parents[2]
    for sub in ("flyops", "fly", "env", "tests/fakefly", "keydb"):
        for path in (root / sub).rglob("*"):
            if path.is_file() and path.suffix in (".py", ".toml", ".example", ".md", ".json", ".sh", ""):
                assert MARK.encode() not in path.read_bytes(), path


def test_the_safe_point_and_rollback_with_data_hold_no_secret(leaky):
    """`deploy` taking its safe point (a backup through DATABASE_URL, whose password is a
    canary, into a repository whose password is one) and `rollback --with-data` restoring,
    verifying and swapping it, all under `-d`: every output and file is searched as above.
    Staging reads its database from DATABASE_URL here (`database.source = "url"`), since the
    stand-in's Postgres cluster has no real server behind it that knows a canary password."""
    from tests.helpers import set_safe_point

    ops, url, tmp = leaky
    overlay = ops.root / "fly" / "staging.toml"
    overlay.write_text(overlay.read_text() + '\n[database]\nsource = "url"\n')
    set_safe_point(ops.root, "staging", "auto")  # and re-render
    write_env(ops.root, "staging", {**FLY_VALUES, "DATABASE_URL": url})
    db = url.rsplit("/", 1)[1]
    steps = [
        (("up", "--env", "staging", "--yes", "--image", "registry.fly.io/my-app:1"), {0}),
        (("db.init", "--env", "staging"), {0}),
        (("--dry", "deploy", "--env", "staging", "--image", "registry.fly.io/my-app:2"), {0}),
        (("deploy", "--env", "staging", "--image", "registry.fly.io/my-app:2", "--verbose"), {0}),
        (("--dry", "rollback", "--env", "staging", "--with-data"), {0}),
        (("rollback", "--env", "staging", "--with-data", "--json"), {0}),
        (("rollback", "--env", "staging", "--with-data", "--confirm", db, "--verbose"), {0}),
        (("audit", "--env", "staging", "--json"), {0}),
    ]
    leaks, texts = [], []
    for argv, ok in steps:
        r = ops.inv("-d", *argv, FLY_API_TOKEN=TOKEN, TMPDIR=str(tmp))
        assert r.returncode in ok, f"inv -d {' '.join(argv)}: exit {r.returncode}\n{r.stderr[-3000:]}"
        texts += [(f"inv -d {' '.join(argv)}: stdout", r.stdout), (f"inv -d {' '.join(argv)}: stderr", r.stderr)]
    deployed = next(t for w, t in texts if w.endswith("--verbose: stderr") and " deploy " in w)
    assert "safe point: backup " in deployed  # a backup was really taken through the canary URL
    swapped = json.loads(next(t for w, t in texts if w.endswith("--with-data --json: stdout")))
    assert swapped["verified"]["ok"] and not swapped["swapped"]  # the path ran for real
    assert any("swapped:" in t for w, t in texts if "--confirm" in w)
    for where, text in texts:
        for hit in found_in(text.encode(), []):
            line = next((ln for ln in text.splitlines() if MARK in ln), "")
            leaks.append(f"{where}: {hit}: {line[:300]}")
    files = [p for p in (ops.home / "argv.log", ops.home / "events.jsonl") if p.exists()]
    files += [p for p in ops.root.rglob("*") if p.is_file() and p.parent.name != "env"]
    files += [p for p in tmp.rglob("*") if p.is_file()]
    for path in files:
        for hit in found_in(path.read_bytes(), []):
            leaks.append(f"{path.relative_to(path.anchor)}: {hit}")
    # the audit trail lives in the stand-in's state (machine metadata): no canary in it either
    state = json.loads((ops.home / "state.json").read_text())
    trail = json.dumps(state["apps"].get("my-app-ops-staging", {}).get("machines", []))
    assert "safe_point" in trail and MARK not in trail
    assert not leaks, "\n".join(leaks)


def test_tigris_keys_never_reach_output_logs_or_files(ops, pg, make_db, s3):
    """`fly storage create` prints the bucket's keys once (the stand-in's as flyctl's
    setSecretsFromExtension): with -d, db.init, db.backup (with a copy), db.list, db.verify,
    db.restore and db.prune must show none of them, nor the canaries; only env/local.env holds them."""
    import secrets as _secrets

    from tests.helpers import edit

    db = make_db("leaktg")
    url = pg.url(db).reveal()
    seed_sample(url)
    bucket = f"leak-{_secrets.token_hex(4)}"
    edit(ops.root / "fly" / "local.toml", 'repository = "var/backups/local"',
         f'repository = "tigris"\nbucket = "{bucket}"\nendpoint = "{s3.endpoint}"\n'
         'copies = [{ repository = "offsite/{env}", password_key = "COPY_RESTIC_PASSWORD" }]')
    write_env(ops.root, "local", {"DATABASE_URL": url, "RESTIC_PASSWORD": LOCAL_RESTIC,
                                  "COPY_RESTIC_PASSWORD": canary("copy")})
    extra = {"FLY_API_TOKEN": TOKEN, "FAKEFLY_TIGRIS_ENDPOINT": s3.endpoint}
    outputs = []
    for argv in (("db.init", "--env", "local"), ("db.backup", "--env", "local", "--json"),
                 ("db.backup", "--env", "local"), ("db.list", "--env", "local"),
                 ("db.verify", "--env", "local", "--level", "integrity"), ("db.restore", "--env", "local", "--json"),
                 ("db.prune", "--env", "local"), ("--dry", "db.init", "--env", "local")):
        r = ops.inv("-d", *argv, **extra)
        assert r.returncode == 0, f"inv -d {' '.join(argv)}: exit {r.returncode}\n{r.stderr[-3000:]}"
        assert "invoke.program" in r.stderr
        outputs += [r.stdout, r.stderr]
    text = (ops.root / "env" / "local.env").read_text()
    keys = re.findall(r"^TIGRIS_AWS_(?:ACCESS_KEY_ID|SECRET_ACCESS_KEY)=(.+)$", text, re.M)
    assert len(keys) == 2, "db.init saved no keys: the path that prints them was not exercised"
    values = keys + [LOCAL_RESTIC, canary("copy"), TOKEN]
    leaks = [f"output: {hit}" for out in outputs for hit in found_in(out.encode(), values)]
    files = [p for p in (ops.home / "argv.log", ops.home / "events.jsonl") if p.exists()]
    files += [p for p in ops.root.rglob("*") if p.is_file() and p.parent.name != "env"]
    leaks += [f"{p}: {hit}" for p in files for hit in found_in(p.read_bytes(), values)]
    assert not leaks, "\n".join(leaks)
    assert any("storage" in e["argv"] and "create" in e["argv"] for e in map(json.loads, (ops.home / "argv.log").read_text().splitlines()))
