"""apps create/list/destroy, status, org selection (§0, §1, §6, §17)."""

import json
from pathlib import Path

FLAGS = json.loads((Path(__file__).parent / "flags.json").read_text())


def test_create_json_shape(fly):
    r = fly.run("apps", "create", "web", "--json")
    assert r.rc == 0
    doc = r.json()
    assert list(doc) == FLAGS["apps create"]["json_fields"]
    assert doc["Name"] == "web" and doc["Organization"]["Slug"] == "personal"
    assert r.err == "automatically selected personal organization: Personal\n"


def test_create_text_and_taken(fly):
    r = fly.run("apps", "create", "web", "-o", "personal")
    assert (r.rc, r.out, r.err) == (0, "New app created: web\n", "")
    r = fly.run("apps", "create", "web", "-o", "personal")
    assert r.rc == 1 and r.err.startswith("Error: ")


def test_org_resolution(fly):
    r = fly.run("apps", "create", "x", env={"FAKEFLY_ORGS": "acme"})
    assert r.rc == 1
    assert r.err == "Error: org slug must be specified when not running interactively\n"
    assert fly.run("apps", "create", "x", env={"FAKEFLY_ORGS": "acme", "FLY_ORG": "acme"}).rc == 0
    assert fly.run("apps", "list", "--json", "--org", "acme", env={"FAKEFLY_ORGS": "acme"}).json()[0]["Name"] == "x"


def test_create_name_rules(fly):
    r = fly.run("apps", "create")
    assert r.err == "Error: name argument or flag must be specified when not running interactively\n"
    r = fly.run("apps", "create", "a", "--name", "b")
    assert "two app names specified a and b" in r.err


def test_list_json_keys(fly):
    fly.run("apps", "create", "web")
    doc = fly.run("apps", "list", "--json").json()
    assert list(doc[0]) == FLAGS["apps list"]["json_fields"]


def test_destroy_requires_yes(fly):
    fly.run("apps", "create", "web")
    r = fly.run("apps", "destroy", "web")
    assert r.rc == 1
    assert r.err == "Destroying an app is not reversible.\nError: yes flag must be specified when not running interactively\n"
    assert fly.run("apps", "destroy").err == "Error: no app names provided\n"
    assert fly.run("apps", "destroy", "nope", "-y").err == 'Error: Could not find App "nope"\n'


def test_status_json_shape(fly):
    fly.run("apps", "create", "web")
    doc = fly.run("status", "--json", "-a", "web").json()
    expected = [k for k in FLAGS["status"]["json_fields"] if k != "Network"]
    assert list(doc) == sorted(expected)
    assert doc["Machines"] == [] and doc["Version"] == 0 and doc["Deployed"] is False
    assert set(doc["Organization"]) == {"ID", "InternalNumericID", "Name", "Slug", "RawSlug", "PaidPlan"}
    assert doc["Organization"]["Name"] == "" and doc["Organization"]["RawSlug"] == ""
    assert isinstance(doc["Organization"]["InternalNumericID"], str)
    r = fly.run("status", "--json", "-a", "nope")
    assert r.err == 'Error: failed to get app: Could not find App "nope"\n'


def test_app_name_from_fly_toml_and_env(fly, tmp_path):
    fly.run("apps", "create", "web")
    fly.run("apps", "create", "other")
    (tmp_path / "fly.toml").write_text("app = 'web'\n")
    assert fly.run("status", "--json", cwd=tmp_path).json()["Name"] == "web"
    assert fly.run("status", "--json", cwd=tmp_path, env={"FLY_APP": "other"}).json()["Name"] == "other"
    r = fly.run("status", "--json", "-c", "missing.toml", cwd=tmp_path)
    assert r.err == "Error: config file not found at specified path: missing.toml (also tried: missing.toml/fly.toml)\n"
    r = fly.run("status", "--json")
    assert "missing an app name" in r.err
