import pytest

from flyops.errors import BadInput
from flyops.stack.envfile import load_env
from flyops.stack.model import load_stack
from flyops.stack.wanted import required_keys, wanted_names, wanted_secrets
from tests.helpers import REPO, copy_stack, write_env


@pytest.fixture
def root(tmp_path):
    return copy_stack(tmp_path)


def test_values_are_secrets_and_read_as_dotenv_reads_them(root):
    path = root / "env/staging.env"
    path.write_text('A="multi\nline"\nB=\'#x\'\nC= spaced \nexport D=1\n')
    path.chmod(0o600)
    env = load_env(root, "staging")
    assert env.get("A").reveal() == "multi\nline"
    assert env.get("B").reveal() == "#x"
    assert env.get("D").reveal() == "1"
    assert "multi" not in repr(env)


def test_group_readable_file_is_refused_with_the_fix(root):
    write_env(root, "staging", {"A": "1"}, mode=0o640)
    with pytest.raises(BadInput) as exc:
        load_env(root, "staging")
    assert "readable by group or others" in str(exc.value) and exc.value.fix == f"chmod 600 {root}/env/staging.env"


def test_all_missing_keys_reported_together(root):
    write_env(root, "staging", {"RAILS_MASTER_KEY": "k", "CABLE_STORE_PASSWORD": ""})
    stack = load_stack(root, "staging")
    with pytest.raises(BadInput) as exc:
        wanted_secrets(stack, load_env(root, "staging"))
    msg = str(exc.value)
    for key in ("CABLE_STORE_PASSWORD", "CACHE_STORE_PASSWORD", "KREDIS_STORE_PASSWORD", "JOBS_STORE_PASSWORD"):
        assert key in msg
    assert "RAILS_MASTER_KEY" not in msg.split("missing")[1].split("\n")[0]
    assert "staging.env.example" in exc.value.fix


def test_derived_values_follow_the_stack(root):
    write_env(root, "staging", {"RAILS_MASTER_KEY": "k", "CABLE_STORE_PASSWORD": "c1", "CACHE_STORE_PASSWORD": "c2",
                                "KREDIS_STORE_PASSWORD": "c3", "JOBS_STORE_PASSWORD": "c4"})
    stack = load_stack(root, "staging")
    w = wanted_secrets(stack, load_env(root, "staging"))
    assert w.values["web"]["REDIS_CABLE_HOST"].reveal() == "my-app-staging-cable.internal:6379"
    assert w.values["web"]["REDIS_CABLE_PASSWORD"] == w.values["cable"]["KEYDB_PASSWORD"]
    assert w.values["jobs"]["REDIS_PASSWORD"].reveal() == "c4"
    assert "REDIS_CABLE_HOST" not in w.values["worker"]  # the worker does not use cable
    assert w.external["web"] == {"DATABASE_URL"}  # set by `fly postgres attach`
    assert {k: set(v) | set(w.external.get(k, ())) for k, v in w.values.items()} == wanted_names(stack)


def test_every_example_lists_every_key_the_stack_needs():
    for env in ("staging", "production", "local"):
        stack = load_stack(REPO, env)
        text = (REPO / f"env/{env}.env.example").read_text()
        keys = {line.split("=")[0] for line in text.splitlines() if "=" in line and not line.startswith("#")}
        assert set(required_keys(stack)) <= keys, env
        assert "RESTIC_PASSWORD" in keys
