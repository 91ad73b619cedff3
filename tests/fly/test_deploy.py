"""Deploy ordering and argv, without running anything: waves from the stack, exact calls."""

from __future__ import annotations

import pytest

from flyops.errors import BadInput
from flyops.fly.flyctl import commands as fly
from flyops.fly.waves import (
    AppResult,
    DeployResult,
    current_image,
    dependencies,
    deploy_steps,
    machines_report,
    parse_only,
    waves,
)
from flyops.stack.model import load_stack
from tests.helpers import copy_stack, edit


@pytest.fixture
def root(tmp_path):
    return copy_stack(tmp_path / "ops")


def test_waves_put_stores_and_database_first_then_worker_then_web(root):
    stack = load_stack(root, "staging")
    assert waves(stack) == [["db", "cable", "cache", "kredis", "jobs"], ["worker"], ["web"]]


def test_dependencies_follow_uses_and_web_needs_every_worker(root):
    deps = dependencies(load_stack(root, "staging"))
    assert deps["worker"] == {"db", "cache", "kredis", "jobs"}
    assert deps["web"] == {"db", "cable", "cache", "kredis", "jobs", "worker"}
    assert deps["cable"] == set() and deps["db"] == set()


def test_waves_with_only_take_the_rest_as_in_place(root):
    stack = load_stack(root, "staging")
    assert waves(stack, ["web", "cache"]) == [["cache"], ["web"]]
    assert waves(stack, ["web"]) == [["web"]]
    assert waves(stack, ["worker", "web", "jobs"]) == [["jobs"], ["worker"], ["web"]]


def test_a_database_by_url_is_not_part_of_the_graph(root):
    edit(root / "fly" / "stack.toml", '[database]\nsource = "fly"', '[database]\nsource = "url"')
    stack = load_stack(root, "staging")
    assert waves(stack)[0] == ["cable", "cache", "kredis", "jobs"]
    assert "db" not in dependencies(stack)["web"]


def test_a_second_worker_deploys_beside_the_first_and_before_web(root):
    text = (root / "fly" / "stack.toml").read_text()
    text += '\n[apps.mailer]\nrole = "worker"\nuses = ["jobs"]\n'
    (root / "fly" / "stack.toml").write_text(text)
    stack = load_stack(root, "staging")
    assert waves(stack) == [["db", "cable", "cache", "kredis", "jobs"], ["worker", "mailer"], ["web"]]


def test_parse_only_accepts_components_and_app_names_and_lists_valid_ones(root):
    stack = load_stack(root, "staging")
    assert parse_only(stack, "web, my-app-staging-worker,web") == ["web", "worker"]
    assert parse_only(stack, None) is None
    with pytest.raises(BadInput) as exc:
        parse_only(stack, "web,wrker")
    assert "'wrker'" in exc.value.message
    assert exc.value.fix == "use component names from the stack: db, cable, cache, kredis, jobs, web, worker"


def test_deploy_argv_stores_from_their_build_folder_apps_from_source(root):
    stack = load_stack(root, "staging")
    steps = deploy_steps(stack, ["db", "cache", "worker", "web"])
    assert steps["db"].call is None  # flyctl manages the Postgres image
    assert steps["cache"].call.args == (
        "deploy", str(root / "var" / "build" / "staging" / "cache"),
        "--config", str(root / "fly" / "staging" / "cache.toml"),
        "--app", "my-app-staging-cache", "--yes", "--remote-only", "--ha=false",
    )
    src = str((root / ".." / "my-app").resolve())
    assert steps["web"].call.args == (
        "deploy", src, "--config", str(root / "fly" / "staging" / "web.toml"),
        "--app", "my-app-staging-web", "--yes", "--remote-only", "--ha=false",
    )
    assert all(s.call.mutating for s in steps.values() if s.call)


def test_deploy_argv_with_an_image_has_no_working_directory(root):
    stack = load_stack(root, "staging")
    steps = deploy_steps(stack, ["cache", "web"], image="registry.fly.io/my-app:v7")
    assert steps["web"].call.args == (
        "deploy", "--config", str(root / "fly" / "staging" / "web.toml"),
        "--app", "my-app-staging-web", "--yes", "--image", "registry.fly.io/my-app:v7", "--ha=false",
    )
    # stores are always built from their folder; the image is the Rails app's
    assert "--image" not in steps["cache"].call.args


def test_release_command_only_in_webs_rendered_config(root):
    stack = load_stack(root, "production")
    for c in stack.component_names():
        if c == "db":
            continue
        text = stack.rendered_path(c).read_text()
        assert ("release_command" in text) == (c == "web"), c


def test_pipeline_builders_exact_argv(tmp_path):
    cfg = tmp_path / "web.toml"
    assert fly.image_check("a", cfg, "r/x:1").args == (
        "deploy", "--config", str(cfg), "--app", "a", "--image", "r/x:1", "--build-only", "--yes")
    assert not fly.image_check("a", cfg, "r/x:1").mutating
    assert fly.redeploy_image("a", cfg, "r/x:1").args == (
        "deploy", "--config", str(cfg), "--app", "a", "--yes", "--image", "r/x:1", "--ha=false", "--skip-release-command")
    call = fly.machine_create("ops", "busybox:1", region="fra", name="n", metadata={"k": "a b=c", "j": "{}"})
    assert call.args == ("machine", "create", "--app", "ops", "--region", "fra", "--name", "n",
                         "--metadata", "k=a b=c", "--metadata", "j={}", "busybox:1")
    assert call.mutating
    assert fly.machine_destroy("ops", "m1").args == ("machine", "destroy", "m1", "--app", "ops", "--force")
    with pytest.raises(ValueError):
        fly.image_check("a", tmp_path.relative_to(tmp_path.parent), "r/x:1")


def _machine(state="started", version="4", checks=("passing",), region="fra", tag="t1"):
    return {"id": "m", "state": state, "region": region,
            "image_ref": {"registry": "registry.fly.io", "repository": "app", "tag": tag},
            "config": {"metadata": {"fly_release_version": version}},
            "checks": [{"name": f"c{i}", "status": s, "output": "x"} for i, s in enumerate(checks)]}


def test_machines_report_wants_started_current_and_passing():
    ok, text = machines_report({"Version": 4, "Machines": [_machine(), _machine()]})
    assert ok and text == "2/2 started, checks 2/2"
    ok, text = machines_report({"Version": 4, "Machines": [_machine(), _machine(checks=("critical",))]})
    assert not ok and "1/2 check(s) critical" in text
    ok, text = machines_report({"Version": 4, "Machines": [_machine(), _machine(version="3")]})
    assert not ok and "1 machine(s) not on v4" in text
    ok, text = machines_report({"Version": 4, "Machines": [_machine(), _machine(state="failed")]})
    assert not ok and "1 machine(s) failed" in text
    assert machines_report({"Version": 4, "Machines": []}) == (False, "no machines")


def test_machines_report_standbys_and_stopped_machines_are_healthy():
    # flyctl: a group without services gets a standby that is never started
    # (deployCreateMachinesForGroups); a stopped machine stays stopped on update (shouldSkipLaunch)
    standby = _machine(state="created", checks=())
    standby["config"]["standbys"] = ["m1"]
    ok, text = machines_report({"Version": 4, "Machines": [_machine(checks=()), standby]})
    assert ok and text == "1/1 started, 1 standby"
    idle = _machine(state="stopped", checks=("critical",))   # a stopped machine's checks are not run
    ok, text = machines_report({"Version": 4, "Machines": [_machine(), idle]})
    assert ok and text.startswith("1/2 started, 1 stopped") and text.endswith("checks 1/1")


def test_current_image_is_the_machines_image():
    st = {"Machines": [_machine(tag="a"), _machine(tag="a"), _machine(tag="b")]}
    assert current_image(st) == "registry.fly.io/app:a"
    assert current_image({"Machines": []}) == ""


def test_result_names_apps_on_and_off_the_new_release():
    res = DeployResult("staging", "deploy", [
        AppResult("cable", "a-cable", "store", "deployed", 1, 2),
        AppResult("worker", "a-worker", "worker", "failed", 1, None, detail="boom"),
        AppResult("web", "a-web", "web", "not started", 1),
    ], [["cable"], ["worker"], ["web"]])
    assert not res.ok
    assert [r.component for r in res.on_new_release()] == ["cable"]
    assert [r.component for r in res.touched()] == ["cable", "worker"]
    assert res.summary() == "staging: on the new release: cable. Not on it: worker failed (boom); web not started"
    assert res.details() == {"apps": {"cable": [1, 2, "deployed"], "worker": [1, None, "failed"],
                                      "web": [1, None, "not started"]}}
