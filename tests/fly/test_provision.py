"""The `up` planner (pure) and the Postgres password's trip to the env file."""

import os
import stat

import pytest

from flyops.errors import OpsError
from flyops.fly.flyctl.output import postgres_create_password as parse_pg_password
from flyops.fly.plan import Live
from flyops.fly.provision import plan_up, store_env_value
from flyops.fly.secrets import build_secrets_plan, components_for
from flyops.secret import Secret
from flyops.stack.envfile import EnvFile, parse_env_text
from flyops.stack.model import load_stack
from flyops.stack.wanted import wanted_secrets
from tests.helpers import REPO
from tests.tasks.conftest import STAGING_VALUES


@pytest.fixture
def staging():
    return load_stack(REPO, "staging")


def _plan(stack, live):
    env = EnvFile(path=REPO / "env/x.env", values={k: Secret(v) for k, v in STAGING_VALUES.items()})
    wanted = wanted_secrets(stack, env)
    comps = components_for(stack, None)
    return plan_up(stack, live, build_secrets_plan(stack, wanted, comps, live.apps, live.secrets))


def test_from_nothing_everything_is_planned_in_dependency_order(staging):
    plan = _plan(staging, Live())
    assert plan.missing_db and plan.missing_apps == ["cable", "cache", "kredis", "jobs", "web", "worker"]
    assert plan.attach == ["web", "worker"]
    kinds = [r.kind for r in plan.rows]
    assert kinds.index("database") < kinds.index("app") < kinds.index("volume") < kinds.index("attach") < kinds.index("secret")
    assert {r.action for r in plan.rows if r.kind == "secret" and r.target != "DATABASE_URL"} == {"add"}


def test_attached_apps_are_not_attached_again(staging):
    apps = {staging.app_name(c): {"Name": staging.app_name(c), "Deployed": True} for c in staging.component_names()}
    secrets = {staging.app_name("web"): [{"name": "DATABASE_URL", "digest": "d"}]}
    plan = _plan(staging, Live(apps=apps, secrets=secrets))
    assert not plan.missing_db and plan.missing_apps == [] and plan.attach == ["worker"]


def test_password_is_parsed_from_create_output_and_written_0600(tmp_path):
    out = "Postgres cluster x created\n  Username:    postgres\n  Password:    s3cr3tPW\n  Hostname:    x.internal\n"
    pw = parse_pg_password(out)
    assert pw.reveal() == "s3cr3tPW" and "s3cr3t" not in repr(pw)
    assert parse_pg_password("Postgres cluster x created\n") is None  # then it is read back from the cluster
    path = tmp_path / "staging.env"
    path.write_text("# keep me\nA=1\nPOSTGRES_PASSWORD=\nB='two'\n")
    path.chmod(0o600)
    store_env_value(path, "POSTGRES_PASSWORD", pw)
    assert path.read_text() == "# keep me\nA=1\nPOSTGRES_PASSWORD=s3cr3tPW\nB='two'\n"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    store_env_value(path, "OTHER", Secret("x"))
    assert parse_env_text(path.read_text())["OTHER"].reveal() == "x"


# -- the Postgres password, against the stand-in (flypg/launcher.go prints it last) -----------------


def _fake_runner(tmp_path, **env):
    import sys

    from flyops.fly.flyctl.runner import FlyRunner

    sys.path.insert(0, str(REPO / "tests/fakefly"))
    home = tmp_path / "fly"
    base = {"PATH": os.environ["PATH"], "FLYCTL": str(REPO / "tests/fakefly/flyctl"), "FLY_API_TOKEN": "t",
            "FAKEFLY_HOME": str(home), "FLY_CONFIG_DIR": str(home / "dot-fly"), **env}
    return FlyRunner(env=base, echo=lambda line: None), home


def _envfile(tmp_path):
    path = tmp_path / "staging.env"
    path.write_text("A=1\n")
    path.chmod(0o600)
    return EnvFile(path=path, values={"A": Secret("1")})


def test_a_cluster_that_fails_its_checks_still_leaves_its_password_saved(staging, tmp_path):
    """Without --detach flyctl watches the checks and, when they fail, exits 1 before it
    prints `Password:` (the stand-in does too): the password was gone for good. With
    --detach it is printed and saved first; our own wait then reports the checks."""
    from flyops.fly.provision import create_cluster

    runner, home = _fake_runner(tmp_path, FAKEFLY_UNHEALTHY="my-app-staging-db")
    from fakefly import state

    envfile = _envfile(tmp_path)
    with pytest.raises(OpsError, match="created and its password saved, but machine"):
        create_cluster(staging, runner, envfile, lambda line: None, ready_timeout=0.5)
    pw = state.load(home)["apps"]["my-app-staging-db"]["pg"]["password"]
    assert f"POSTGRES_PASSWORD={pw}\n" in envfile.path.read_text()
    assert any("--detach" in r.args for r in runner.records if r.args[:2] == ("postgres", "create"))


def test_a_lost_password_is_read_back_from_the_cluster(staging, tmp_path):
    from flyops.fly.flyctl import commands as fly
    from flyops.fly.provision import recover_pg_password

    runner, home = _fake_runner(tmp_path)
    from fakefly import state

    runner.run(fly.postgres_create("my-app-staging-db", "personal", "fra", cluster_size=2, vm_size="shared-cpu-1x",
                                   volume_size_gb=1))
    pw = state.load(home)["apps"]["my-app-staging-db"]["pg"]["password"]
    assert recover_pg_password(runner, "my-app-staging-db").reveal() == pw
