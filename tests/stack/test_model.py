"""The stack model: the shipped example loads; every kind of bad input is one clear error."""

import pytest

from flyops.errors import BadInput, ExitCode
from flyops.stack.model import environments, load_stack
from tests.helpers import REPO, copy_stack, edit


@pytest.fixture
def root(tmp_path):
    return copy_stack(tmp_path)


def test_shipped_example_is_the_article_stack():
    staging = load_stack(REPO, "staging")
    production = load_stack(REPO, "production")
    assert staging.regions == ["fra"]
    assert production.regions == ["fra", "iad", "sin"]
    assert staging.app_name("web") == "my-app-staging-web"
    assert [c.name for c in staging.components()] == ["db", "cable", "cache", "kredis", "jobs", "web", "worker"]
    assert staging.apps["web"].release_command and not staging.apps["worker"].release_command
    assert staging.stores["jobs"].policy == "noeviction" and staging.stores["jobs"].engine == "redis"
    assert {s.engine for n, s in staging.stores.items() if n != "jobs"} == {"keydb"}
    # the overlay changes only what it names; the rest comes from the base file
    assert production.apps["web"].min_machines == 2 and production.apps["web"].port == 3000
    assert set(environments(REPO)) >= {"staging", "production", "local"}


def test_app_name_override(root):
    edit(root / "fly/production.toml", "[apps.web]\n", '[apps.web]\napp = "my-app"\n')
    assert load_stack(root, "production").app_name("web") == "my-app"


def _error(root, env="staging") -> str:
    with pytest.raises(BadInput) as exc:
        load_stack(root, env)
    assert exc.value.code == ExitCode.BAD_INPUT
    return str(exc.value)


def test_unknown_key_names_file_line_and_path(root):
    edit(root / "fly/stack.toml", "health_path =", "helth_path =")
    msg = _error(root)
    assert "fly/stack.toml:" in msg and "apps.web.helth_path: unknown key" in msg
    line = int(msg.split("fly/stack.toml:")[1].split(":")[0])
    assert "helth_path" in (root / "fly/stack.toml").read_text().splitlines()[line - 1]


def test_bad_region_in_overlay(root):
    edit(root / "fly/staging.toml", 'regions = ["fra"]', 'regions = ["fra", "xyz"]')
    msg = _error(root)
    assert "fly/staging.toml:4: environment.regions" in msg and "'xyz' is not a Fly region" in msg


def test_primary_region_must_be_listed(root):
    edit(root / "fly/staging.toml", 'primary_region = "fra"', 'primary_region = "iad"')
    assert "primary_region 'iad' must be one of regions" in _error(root)


def test_bad_policy_and_size_and_several_problems_together(root):
    edit(root / "fly/stack.toml", 'policy = "volatile-lru"', 'policy = "lru"')
    edit(root / "fly/stack.toml", 'maxmemory = "200mb"\npolicy = "allkeys-lru"', 'maxmemory = "lots"\npolicy = "allkeys-lru"')
    msg = _error(root)
    assert "2 problems" in msg
    assert "stores.cable.policy" in msg and "'lru'" in msg
    assert "stores.cache.maxmemory" in msg and "not a size" in msg


def test_jobs_store_must_not_evict(root):
    edit(root / "fly/stack.toml", 'purpose = "jobs"\nmaxmemory = "200mb"\npolicy = "noeviction"',
         'purpose = "jobs"\nmaxmemory = "200mb"\npolicy = "allkeys-lru"')
    assert "stores.jobs: a jobs store must use policy = \"noeviction\"" in _error(root)


def test_worker_rules(root):
    edit(root / "fly/staging.toml", "[environment]", '[apps.worker]\nrelease_command = "rake db:migrate"\n\n[environment]')
    assert "apps.worker: a worker must not have a release_command" in _error(root)


def test_missing_field(root):
    edit(root / "fly/stack.toml", 'org = "personal"', "")
    assert "project.org: missing" in _error(root)


def test_uses_unknown_store(root):
    edit(root / "fly/stack.toml", 'uses = ["database", "cable", "cache", "kredis", "jobs"]', 'uses = ["database", "cabel"]')
    assert "'cabel' is neither 'database' nor a store" in _error(root)


def test_toml_syntax_error_names_line(root):
    (root / "fly/staging.toml").write_text('[environment]\nprimary_region = "fra\n')
    msg = _error(root)
    assert msg.startswith("fly/staging.toml:2: TOML syntax error")


def test_unknown_environment_lists_the_known_ones(root):
    with pytest.raises(BadInput) as exc:
        load_stack(root, "prod")
    assert "unknown environment 'prod'" in str(exc.value) and "staging" in exc.value.fix


def test_duplicate_app_names(root):
    edit(root / "fly/staging.toml", "[environment]", '[apps.worker]\napp = "my-app-staging-web"\n\n[environment]')
    assert "both get app name 'my-app-staging-web'" in _error(root)


def test_backup_repository_forms(root):
    s = load_stack(root, "staging")
    assert s.backup_repository() == str(root / "var/backups/staging")
    edit(root / "fly/staging.toml", "[environment]", '[backup]\nrepository = "ftp://x/y"\n\n[environment]')
    assert "backup.repository" in _error(root)


def test_placement_of_the_example_follows_the_walkthrough():
    prod = load_stack(REPO, "production")
    every = {"fra": 1, "iad": 1, "sin": 1}
    for store in ("cable", "cache", "kredis", "jobs"):
        assert prod.placement(store) == every          # one machine per region, on that region's volume
    assert prod.placement("worker") == every           # Sidekiq reads FLY_REGION.<jobs app>.internal
    assert prod.placement("web") == {"fra": 2, "iad": 2, "sin": 2}   # min_machines = 2 holds in fra
    assert prod.placement("db") == {}


@pytest.mark.parametrize(("where", "old", "new", "says"), [
    ("fly/production.toml", "placement = { per_region = 2 }", 'placement = { per_region = 2, regions = ["fra", "ams"] }',
     "apps.web.placement.regions: ams not in environment.regions"),
    ("fly/production.toml", "[stores.cache]\n", '[stores.cache]\nplacement = { regions = ["fra", "iad"] }\n',
     "apps.web.placement.regions: sin has no cache store"),
    ("fly/production.toml", "[stores.cache]\n", "[stores.cache]\nplacement = { per_region = 2 }\n",
     "a store runs one machine per region"),
    ("fly/production.toml", "placement = { per_region = 2 }", "placement = { per_region = 1 }",
     "apps.web.min_machines = 2 is more than placement.per_region = 1"),
    ("fly/production.toml", "[apps.worker]\n", '[apps.worker]\nplacement = { regions = "some" }\n',
     "apps.worker.placement.regions"),
])
def test_bad_placement_is_one_clear_error(root, where, old, new, says):
    edit(root / where, old, new)
    assert says in _error(root, "production")


def test_a_store_placed_in_fewer_regions_gets_volumes_only_there(root):
    from flyops.fly.volumes import plan_store_volumes

    edit(root / "fly/production.toml", "placement = { per_region = 2 }", 'placement = { per_region = 2, regions = ["fra", "iad"] }')
    edit(root / "fly/stack.toml", "[stores.jobs]\n", '[stores.jobs]\nplacement = { regions = ["fra", "iad"] }\n')
    edit(root / "fly/stack.toml", '(it never starts by itself).\nplacement = { regions = "all", per_region = 1 }',
         '(it never starts by itself).\nplacement = { regions = ["fra", "iad"] }')
    stack = load_stack(root, "production")
    steps = plan_store_volumes(stack, {})
    assert sorted(s.region for s in steps if s.store == "jobs") == ["fra", "iad"]
    assert stack.placement("worker") == {"fra": 1, "iad": 1}
