"""The store-volume planner: input (stack + `volumes list --json`) -> steps."""

import pytest

from flyops.errors import BadInput
from flyops.fly.volumes import plan_store_volumes, select
from flyops.stack.model import load_stack
from tests.helpers import REPO


def vol(vid, region, size=1, name="keydb_server", state="created"):
    return {"id": vid, "name": name, "region": region, "size_gb": size, "state": state, "created_at": vid}


@pytest.fixture
def prod():
    return load_stack(REPO, "production")


def actions(steps, store=None):
    return [(s.store, s.region, s.action) for s in steps if store is None or s.store == store]


def test_nothing_exists_means_one_create_per_store_per_region(prod):
    steps = plan_store_volumes(prod, {})
    creates = [(s.store, s.region) for s in steps if s.action == "create"]
    assert len(creates) == len(prod.stores) * 3 == 12
    assert all(s.action == "create" for s in steps)
    jobs = [s for s in steps if s.store == "jobs"]
    assert {s.name for s in jobs} == {"redis_server"}
    cache = [s for s in steps if s.store == "cache"]
    assert {s.size_gb for s in cache} == {2}  # production overlay
    assert cache[0].call().args == (
        "volumes", "create", "keydb_server", "--app", "my-app-production-cache",
        "--region", "fra", "--size", "2", "--yes", "--json",
    )


def test_counts_per_region_and_creates_only_the_missing(prod):
    live = {"my-app-production-cable": [vol("v1", "fra"), vol("v2", "iad")]}
    steps = plan_store_volumes(prod, live, select(prod, "cable"))
    assert actions(steps) == [("cable", "fra", "keep"), ("cable", "iad", "keep"), ("cable", "sin", "create")]


def test_same_name_on_another_store_app_does_not_count(prod):
    # volume names are per app: cable's keydb_server does not satisfy cache
    live = {"my-app-production-cable": [vol("v1", "fra")]}
    steps = plan_store_volumes(prod, live, select(prod, "cache", "fra"))
    assert actions(steps) == [("cache", "fra", "create")]


def test_destroyed_or_differently_named_volumes_do_not_count(prod):
    live = {"my-app-production-kredis": [vol("v1", "fra", state="pending_destroy"), vol("v2", "fra", name="other")]}
    steps = plan_store_volumes(prod, live, select(prod, "kredis", "fra"))
    assert actions(steps) == [("kredis", "fra", "create")]


def test_smaller_is_extended_larger_is_kept_never_shrunk(prod):
    live = {"my-app-production-cache": [vol("a", "fra", 1), vol("b", "iad", 5), vol("c", "sin", 2)]}
    steps = plan_store_volumes(prod, live, select(prod, "cache"))
    fra, iad, sin = steps
    assert (fra.action, fra.volume_id, fra.current_gb, fra.size_gb) == ("extend", "a", 1, 2)
    assert fra.call().args == ("volumes", "extend", "a", "--app", "my-app-production-cache", "--size", "2", "--yes", "--json")
    assert iad.action == "keep" and "never shrunk" in iad.detail()
    assert sin.action == "keep" and "never" not in sin.detail()


def test_extras_and_foreign_regions_are_reported_not_destroyed(prod):
    live = {"my-app-production-cable": [vol("a", "fra"), vol("b", "fra"), vol("c", "iad"), vol("d", "sin"), vol("e", "ams")]}
    steps = plan_store_volumes(prod, live, select(prod, "cable"))
    extra = [s for s in steps if s.action == "extra"]
    assert {s.volume_id for s in extra} == {"b", "e"}
    assert all(not s.mutating for s in extra)
    assert "not destroyed" in extra[0].detail()
    with pytest.raises(ValueError):
        extra[0].call()


def test_bad_store_and_region_name_the_option(prod):
    with pytest.raises(BadInput) as e:
        select(prod, "sessions")
    assert "--store 'sessions'" in str(e.value) and "cable" in e.value.fix
    with pytest.raises(BadInput) as e:
        select(prod, None, "ams")
    assert "--region 'ams'" in str(e.value) and "fra, iad, sin" in e.value.fix


def test_local_env_has_no_volumes():
    with pytest.raises(BadInput, match="not deployed to Fly"):
        select(load_stack(REPO, "local"))
