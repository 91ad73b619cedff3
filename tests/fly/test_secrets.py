"""The secrets diff (pure) and its lock file."""

import json

import pytest

from flyops.errors import BadInput
from flyops.fly.secrets import SecretsLock, components_for, diff_app, fingerprint
from flyops.secret import Secret
from flyops.stack.model import load_stack
from tests.helpers import REPO


@pytest.fixture
def lock(tmp_path):
    return SecretsLock(tmp_path / "secrets.lock.json")


def status(rows):
    return {r.name: r.status for r in rows}


def live(**digests):
    return [{"name": k, "digest": v, "status": "Deployed"} for k, v in digests.items()]


def test_every_status(lock):
    wanted = {"NEW": Secret("n"), "SAME": Secret("s"), "CHANGED": Secret("c2"), "DRIFTED": Secret("d"),
              "NEVER_PUSHED": Secret("x")}
    lock.record("web", "SAME", fingerprint("SAME", Secret("s")), "dg-same")
    lock.record("web", "CHANGED", fingerprint("CHANGED", Secret("c1")), "dg-changed")
    lock.record("web", "DRIFTED", fingerprint("DRIFTED", Secret("d")), "dg-old")
    rows = diff_app("web", "web", wanted, {"DATABASE_URL"},
                    live(SAME="dg-same", CHANGED="dg-changed", DRIFTED="dg-new", NEVER_PUSHED="x", OLD="o",
                         DATABASE_URL="u"), lock)
    assert status(rows) == {"NEW": "add", "SAME": "unchanged", "CHANGED": "change", "DRIFTED": "drift",
                            "NEVER_PUSHED": "unknown", "OLD": "remove", "DATABASE_URL": "external"}
    assert "changed on Fly since" in next(r.detail for r in rows if r.name == "DRIFTED")


def test_app_that_does_not_exist_wants_everything_added(lock):
    rows = diff_app("cache", "a", {"KEYDB_PASSWORD": Secret("p")}, set(), None, lock)
    assert status(rows) == {"KEYDB_PASSWORD": "add"}


def test_fingerprint_is_salted_by_name_and_never_the_value():
    v = Secret("hunter2-hunter2")
    assert fingerprint("A", v) != fingerprint("B", v)
    assert len(fingerprint("A", v)) == 16 and "hunter2" not in fingerprint("A", v)


def test_lock_round_trip_is_sorted_and_has_no_values(lock):
    lock.record("b-app", "Z", "fz", "dz")
    lock.record("a-app", "Y", "fy", "dy")
    lock.save()
    text = lock.path.read_text()
    data = json.loads(text)
    assert list(data["apps"]) == ["a-app", "b-app"]
    again = SecretsLock.load(lock.path)
    assert again.get("b-app", "Z")["digest"] == "dz"
    again.forget("b-app", "Z")
    assert "b-app" not in again.apps


def test_broken_lock_is_bad_input(lock):
    lock.path.write_text("{not json")
    with pytest.raises(BadInput, match="secrets lock"):
        SecretsLock.load(lock.path)


def test_app_option_takes_component_or_app_name_and_never_the_database():
    stack = load_stack(REPO, "staging")
    assert components_for(stack, "web") == ["web"]
    assert components_for(stack, "my-app-staging-cache") == ["cache"]
    assert "db" not in components_for(stack, None)
    with pytest.raises(BadInput, match="--app 'nope'"):
        components_for(stack, "nope")
    with pytest.raises(BadInput, match="Postgres"):
        components_for(stack, "db")
