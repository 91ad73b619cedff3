"""flyops.fly.tigris: the argv of the storage calls, reading what flyctl prints, and where the
keys go in the env file (flyops.envfile.store_values)."""

from __future__ import annotations

import stat

import pytest

from flyops.errors import BadInput, OpsError, PreconditionFailed
from flyops.fly import tigris
from flyops.secret import MASK, Secret
from flyops.stack.envfile import load_env, store_values

# what `fly storage create` prints with no app in context (core.go setSecretsFromExtension)
CREATED = """By specifying the --yes flag, you have agreed to the terms displayed above.
Your Tigris Object Storage bucket (my-app-staging-backups) is ready. See details and next steps with: x

Set the following secrets on your target app.
AWS_ACCESS_KEY_ID: tid_abcdef
AWS_ENDPOINT_URL_S3: https://fly.storage.tigris.dev
AWS_REGION: auto
AWS_SECRET_ACCESS_KEY: tsec_0123456789
BUCKET_NAME: my-app-staging-backups
"""


def test_calls_never_carry_an_app_and_create_is_non_interactive():
    assert tigris.storage_list("acme").args == ("storage", "list", "--org", "acme")
    c = tigris.storage_create("b-1", "acme")
    assert c.args == ("storage", "create", "--name", "b-1", "--org", "acme", "--yes") and c.mutating
    assert "--app" not in c.args and not c.json
    assert tigris.storage_destroy("b-1").args == ("storage", "destroy", "b-1", "--yes")


def test_bucket_names_from_the_list_table():
    table = "NAME                   \u2502 ORG\nmy-app-staging-backups \u2502 acme\nother\tacme\n\n"
    assert tigris.bucket_names(table) == ["my-app-staging-backups", "other"]
    assert tigris.bucket_names("NAME\tORG\n\n") == []


def test_credentials_are_secrets_and_the_rest_is_text():
    keys, facts = tigris.parse_credentials(CREATED)
    assert keys["AWS_ACCESS_KEY_ID"].reveal() == "tid_abcdef" and str(keys["AWS_SECRET_ACCESS_KEY"]) == MASK
    assert facts == {"AWS_ENDPOINT_URL_S3": "https://fly.storage.tigris.dev", "AWS_REGION": "auto",
                     "BUCKET_NAME": "my-app-staging-backups"}
    with pytest.raises(OpsError) as e:
        tigris.parse_credentials("Set the following secrets on your target app.\nAWS_ACCESS_KEY_ID: tid_x\n")
    assert "AWS_SECRET_ACCESS_KEY" in e.value.message and "tid_x" not in str(e.value)


def test_store_values_keeps_other_lines_and_the_mode(tmp_path):
    (tmp_path / "env").mkdir()
    path = tmp_path / "env" / "x.env"
    path.write_text("# head\nAWS_ACCESS_KEY_ID=mine\nTIGRIS_AWS_ACCESS_KEY_ID=old\nexport OTHER='a b'\nLAST=1")
    path.chmod(0o400)
    store_values(path, {"TIGRIS_AWS_ACCESS_KEY_ID": Secret("tid_new"), "TIGRIS_AWS_SECRET_ACCESS_KEY": Secret("tsec_n")})
    assert path.read_text() == ("# head\nAWS_ACCESS_KEY_ID=mine\nTIGRIS_AWS_ACCESS_KEY_ID=tid_new\nexport OTHER='a b'\n"
                                "LAST=1\nTIGRIS_AWS_SECRET_ACCESS_KEY=tsec_n\n")
    assert stat.S_IMODE(path.stat().st_mode) == 0o400
    env = load_env(tmp_path, "x")
    assert env.get("OTHER").reveal() == "a b" and env.get("AWS_ACCESS_KEY_ID").reveal() == "mine"
    with pytest.raises(BadInput) as e:
        store_values(path, {"K": Secret("has space")})
    assert "K" in e.value.message and "has space" not in str(e.value)
    assert "K=" not in path.read_text()


def test_repository_needs_the_keys(tmp_path):
    (tmp_path / "env").mkdir()
    path = tmp_path / "env" / "s.env"
    path.write_text("RESTIC_PASSWORD=x\nTIGRIS_AWS_ACCESS_KEY_ID=\n")
    path.chmod(0o600)
    with pytest.raises(PreconditionFailed) as e:
        tigris.repository("b-1", "https://fly.storage.tigris.dev", "s", load_env(tmp_path, "s"))
    assert "inv db.init --env s" in e.value.fix
    path.write_text("TIGRIS_AWS_ACCESS_KEY_ID=tid_a\nTIGRIS_AWS_SECRET_ACCESS_KEY=tsec_b\n")
    repo = tigris.repository("b-1", "https://fly.storage.tigris.dev/", "s", load_env(tmp_path, "s"))
    assert repo.location == "s3:https://fly.storage.tigris.dev/b-1/s" and repo.region == "auto"


def test_stack_names_a_bad_bucket_and_a_copy_on_the_platform(tmp_path):
    from flyops.stack.model import load_stack
    from tests.helpers import copy_stack, edit

    root = copy_stack(tmp_path / "r")
    edit(root / "fly" / "local.toml", 'repository = "var/backups/local"', 'repository = "tigris"\nbucket = "Bad_Name"')
    with pytest.raises(BadInput) as e:
        load_stack(root, "local")
    assert "fly/local.toml:" in e.value.message and "backup.bucket" in e.value.message
    edit(root / "fly" / "local.toml", 'bucket = "Bad_Name"', 'copies = [{ repository = "tigris" }]')
    with pytest.raises(BadInput) as e:
        load_stack(root, "local")
    assert "backup.copies[0].repository" in e.value.message and "off the platform" in e.value.message
    edit(root / "fly" / "local.toml", 'copies = [{ repository = "tigris" }]', 'copies = [{ repository = "/mnt/off/{env}" }]')
    stack = load_stack(root, "local")
    assert stack.backup_repository() == "tigris" and stack.tigris_bucket() == "my-app-local-backups"
    assert stack.copy_locations() == ["/mnt/off/local"]
