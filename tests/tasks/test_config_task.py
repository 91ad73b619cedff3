"""config.* tasks end to end."""

import json

from tests.helpers import edit
from tests.tasks.conftest import STAGING_VALUES


def test_render_then_check_then_stale(ops):
    r = ops.inv("config.render", "--env", "staging")
    assert r.returncode == 0 and "fly/staging/web.toml: unchanged" in r.stdout
    assert ops.inv("config.check").returncode == 0
    edit(ops.root / "fly/stack.toml", "port = 3000", "port = 3001")
    r = ops.inv("config.check")
    assert r.returncode == 7
    assert "fly/staging/web.toml: stale" in r.stderr and "fly/production/web.toml: stale" in r.stderr
    assert "inv config.render" in r.stderr
    assert ops.inv("config.render", "--env", "staging").returncode == 0
    assert ops.inv("config.check", "--env", "staging").returncode == 0
    assert ops.argv_log() == []  # rendering never talks to Fly


def test_show_json_has_names_and_no_values(ops):
    r = ops.inv("config.show", "--env", "production", "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["app_names"]["web"] == "my-app-production-web"
    assert data["environment"]["regions"] == ["fra", "iad", "sin"]
    assert set(data["secrets"]["web"]) >= {"RAILS_MASTER_KEY", "REDIS_CABLE_PASSWORD", "REDIS_CABLE_HOST"}
    for value in STAGING_VALUES.values():
        assert value not in r.stdout + r.stderr


def test_malformed_stack_is_one_message_exit_2_and_touches_nothing(ops):
    edit(ops.root / "fly/stack.toml", "volume_size_gb = 1\nenv_prefix = \"REDIS_CABLE\"",
         "volume_size_gb = 0\nenv_prefix = \"REDIS_CABLE\"")
    for task in (["plan", "--env", "staging"], ["config.render", "--env", "staging"], ["config.show", "--env", "staging"]):
        r = ops.inv(*task)
        assert r.returncode == 2, task
        assert "fly/stack.toml:" in r.stderr and "stores.cable.volume_size_gb" in r.stderr
        assert "Traceback" not in r.stderr
    assert ops.argv_log() == []


def test_missing_env_option(ops):
    r = ops.inv("plan")
    assert r.returncode != 0 and "env" in (r.stderr + r.stdout)
