"""Bad input, one row each, end to end through `inv`: one message naming the file, key or
option (and the fix), the documented exit code, and never a traceback (without -d).

Rows come from the new-user review (/work/shared/reference/review-new-user.md: cases 06b, 18,
18b, 19, 43c, 44d, 44g, 51c, 52, 53) and the conventions of issue 14."""

from __future__ import annotations

import json

import pytest

from tests.helpers import edit, write_env
from tests.tasks.conftest import STAGING_VALUES


def dup_key(ops):
    edit(ops.root / "fly/stack.toml", 'name = "my_app"', 'name = "my_app"\nname = "other"')


def env_dir(mode):
    def setup(ops):
        path = ops.root / "env/staging.env"
        path.unlink()
        path.mkdir(mode=mode)
        path.chmod(mode)
    return setup


def env_bytes(ops):
    path = ops.root / "env/staging.env"
    path.write_bytes(path.read_bytes() + b"EXTRA=caf\xe9\n")


def env_line(line):
    def setup(ops):
        path = ops.root / "env/staging.env"
        path.write_text(path.read_text() + line + "\n")
    return setup


def lock(data):
    def setup(ops):
        (ops.root / "fly/staging/secrets.lock.json").write_text(json.dumps(data))
    return setup


def no_env_file(ops):
    (ops.root / "env/production.env").unlink()
    (ops.root / "env/production.env.example").unlink()


def unreachable_db(ops):
    write_env(ops.root, "local", {"DATABASE_URL": "postgresql://u:p@127.0.0.1:1/x", "RESTIC_PASSWORD": "x" * 8})
    assert ops.inv("db.init", "--env", "local").returncode == 0  # the repository is fine: the database is not


def empty_values(ops):
    write_env(ops.root, "staging", {**STAGING_VALUES, "CACHE_STORE_PASSWORD": ""})


def nothing(ops):
    pass


ENV_LINES = len(STAGING_VALUES)
ROWS = [
    # id, setup, argv, exit code, words the message must hold
    ("06b duplicate key", dup_key, ("plan", "--env", "staging"), 2, ["fly/stack.toml:", "database.name", "twice"]),
    ("18 env file is a folder", env_dir(0o755), ("secrets.diff", "--env", "staging"), 2, ["env/staging.env is not a file", "folder"]),
    ("18b env file is a 0700 folder", env_dir(0o700), ("secrets.diff", "--env", "staging"), 2, ["env/staging.env is not a file"]),
    ("19 env file not UTF-8", env_bytes, ("secrets.diff", "--env", "staging"), 2, [f"env/staging.env:{ENV_LINES + 1}: not UTF-8", "iconv"]),
    ("43c lock is a JSON list", lock([1, 2]), ("secrets.diff", "--env", "staging"), 2, ["secrets.lock.json: not a secrets lock", "git checkout"]),
    ("43d lock entry of the wrong shape", lock({"version": 1, "apps": {"my-app-staging-web": {"RAILS_MASTER_KEY": "x"}}}),
     ("secrets.diff", "--env", "staging"), 2, ["apps.my-app-staging-web.RAILS_MASTER_KEY is not an object"]),
    ("43e lock apps is a list", lock({"version": 1, "apps": ["x"]}), ("secrets.diff", "--env", "staging"), 2, ["secrets.lock.json: apps"]),
    ("44d --jobs abc", nothing, ("db.restore", "--env", "local", "--jobs", "abc"), 2, ["--jobs 'abc' is not a whole number"]),
    ("44g --limit abc", nothing, ("audit", "--env", "staging", "--limit", "abc"), 2, ["--limit 'abc' is not a whole number"]),
    ("44g' --keep x", nothing, ("audit", "--env", "staging", "--keep", "x"), 2, ["--keep 'x' is not a whole number"]),
    ("51c malformed line", env_line("THIS LINE IS NOT VALID"), ("secrets.diff", "--env", "staging"), 2,
     [f"env/staging.env:{ENV_LINES + 1}: not a KEY=value line"]),
    ("51c' key with a space", env_line("BAD KEY=value"), ("secrets.diff", "--env", "staging"), 2,
     [f"env/staging.env:{ENV_LINES + 1}: not a KEY=value line"]),
    ("52 env file and example missing", no_env_file, ("secrets.diff", "--env", "production"), 2,
     ["env/production.env does not exist", "keys listed in", ".env.example"]),
    ("P1-15 an empty value is not a missing key", empty_values, ("secrets.diff", "--env", "staging"), 2,
     ["1 key(s) with no value: CACHE_STORE_PASSWORD", "set them in"]),
    ("53 no --env", nothing, ("config.show",), 2, ["--env is required", "local, production, staging", "FLYOPS_ENV"]),
    ("53' no --env on plan", nothing, ("plan",), 2, ["--env is required"]),
    ("required --image", nothing, ("schedule.fly", "--env", "production"), 2, ["--image is required"]),
    ("P1-19 a fix names the real env file", unreachable_db, ("db.backup", "--env", "local"), 1, ["fix:", "env/local.env"]),
]


@pytest.mark.parametrize("setup,argv,code,words", [r[1:] for r in ROWS], ids=[r[0] for r in ROWS])
def test_bad_input_is_one_message_and_its_exit_code(ops, setup, argv, code, words):
    setup(ops)
    r = ops.inv(*argv)
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr + r.stdout
    assert r.stderr.startswith("error: "), r.stderr
    for w in words:
        assert w in r.stderr, (w, r.stderr)
    assert "<env>" not in r.stderr and "--env ENV" not in r.stderr
    assert "python-dotenv" not in r.stderr


def test_the_traceback_comes_with_dash_d_only(ops):
    dup_key(ops)
    assert "Traceback" in ops.inv("-d", "plan", "--env", "staging").stderr


def test_flyops_env_is_the_default_environment(ops):
    r = ops.inv("config.show", "--json", FLYOPS_ENV="staging")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["env"] == "staging"


def test_json_errors_are_json_on_stdout(ops):
    write_env(ops.root, "local", {"DATABASE_URL": "postgresql://u:p@127.0.0.1:1/x", "RESTIC_PASSWORD": "x" * 8})
    r = ops.inv("db.backup", "--env", "local", "--kind", "weekly", "--json")
    assert r.returncode == 2
    doc = json.loads(r.stdout)
    assert doc["exit_code"] == 2 and "--kind 'weekly'" in doc["error"] and "error: --kind" in r.stderr


def test_a_database_refusal_is_one_line(ops, pg, make_db):
    """Review case 55: an app role without CREATEDB restoring into a new database. Whatever
    the restore code makes of it, the boundary lets no psycopg traceback through."""
    import psycopg

    from flyops.db.sample import seed_sample

    db = make_db("nocreate")
    with psycopg.connect(pg.url().reveal(), autocommit=True) as c:
        c.execute("CREATE ROLE app_nocreate LOGIN NOCREATEDB PASSWORD 'nocreate-pw-1'")
        c.execute(f'ALTER DATABASE "{db}" OWNER TO app_nocreate')
    try:
        url = f"postgresql://app_nocreate:nocreate-pw-1@127.0.0.1:{pg.port}/{db}"
        seed_sample(url)
        write_env(ops.root, "local", {"DATABASE_URL": url, "RESTIC_PASSWORD": "restic-pw-nocreate"})
        assert ops.inv("db.init", "--env", "local").returncode == 0
        assert ops.inv("db.backup", "--env", "local").returncode == 0
        r = ops.inv("db.restore", "--env", "local")
        assert r.returncode in (1, 5), r.stderr
        assert "Traceback" not in r.stderr and r.stderr.startswith("error: ") and "nocreate-pw-1" not in r.stderr
    finally:
        with psycopg.connect(pg.url().reveal(), autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
            c.execute("DROP ROLE IF EXISTS app_nocreate")
