"""GitHub Actions workflows: shape, secrets via env:, and GitHub's own workflow schema."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from flyops.errors import BadInput
from flyops.fly.ci import parse_deploys, to_yaml, workflows
from tests.helpers import REPO, copy_stack, edit

CHECK_JSONSCHEMA = Path(sys.executable).with_name("check-jsonschema")


@pytest.fixture
def root(tmp_path):
    return copy_stack(tmp_path / "ops")


def load(text: str):
    return YAML(typ="safe").load(text)  # YAML 1.2, as check-jsonschema reads it


def validate(paths: list[Path]) -> subprocess.CompletedProcess:
    return subprocess.run([str(CHECK_JSONSCHEMA), "--builtin-schema", "vendor.github-workflows", *map(str, paths)],
                          capture_output=True, text=True)


def test_generated_workflows_pass_githubs_schema(root, tmp_path):
    files = workflows(root, ops_repo="acme/my-app-ops")
    assert sorted(files) == ["backup-production.yml", "deploy-production.yml", "deploy-staging.yml"]
    paths = []
    for name, text in files.items():
        (tmp_path / name).write_text(text)
        paths.append(tmp_path / name)
    p = validate(paths)
    assert p.returncode == 0, p.stdout + p.stderr


def test_the_schema_check_can_fail(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text(to_yaml({"name": "x", "on": {"push": {}}, "jobs": {"j": {"steps": [{"run": "x"}]}}}))
    assert validate([bad]).returncode != 0  # no runs-on


def test_push_to_staging_deploys_staging_and_main_deploys_production(root):
    files = workflows(root, ops_repo="acme/my-app-ops")
    for name, branch, env in (("deploy-staging.yml", "staging", "staging"), ("deploy-production.yml", "main", "production")):
        wf = load(files[name])
        assert wf["on"]["push"]["branches"] == [branch]
        job = wf["jobs"]["deploy"]
        assert job["env"] == {"FLY_API_TOKEN": "${{ secrets.FLY_API_TOKEN }}"}
        assert wf["concurrency"] == {"group": f"deploy-{env}", "cancel-in-progress": False}
        runs = [s.get("run", "") for s in job["steps"]]
        assert f'inv deploy --env {env} --rollback-on-failure --message "$DEPLOY_MESSAGE"' in runs
        # the token never appears on a command line
        assert not any("FLY_API_TOKEN" in r for r in runs)
        checkouts = [s["with"] for s in job["steps"] if s.get("uses", "").startswith("actions/checkout")]
        assert checkouts == [{"path": "my-app"},
                             {"repository": "acme/my-app-ops", "path": "ops", "token": "${{ secrets.OPS_REPO_TOKEN }}"}]


def test_scheduled_backup_runs_the_backup_task(root):
    wf = load(workflows(root, ops_repo="acme/my-app-ops")["backup-production.yml"])
    assert wf["on"]["schedule"] == [{"cron": "17 * * * *"}]
    job = wf["jobs"]["backup"]
    runs = [s.get("run", "") for s in job["steps"]]
    assert "inv db.backup --env production --if-older-than 20h" in runs
    write = next(s for s in job["steps"] if "ENV_FILE" in s.get("env", {}))
    assert write["env"]["ENV_FILE"] == "${{ secrets.FLYOPS_ENV_PRODUCTION }}"
    assert write["run"] == "umask 077\nprintf '%s\\n' \"$ENV_FILE\" > env/production.env\n"


def test_tasks_inside_the_app_repository_need_one_checkout(root):
    edit(root / "fly" / "stack.toml", 'source = "../my-app"', 'source = "."')
    wf = load(workflows(root)["deploy-staging.yml"])
    steps = wf["jobs"]["deploy"]["steps"]
    assert steps[0] == {"uses": "actions/checkout@v4"}
    assert all(s.get("working-directory", ".") == "." for s in steps)


def test_separate_ops_repository_must_be_named(root):
    with pytest.raises(BadInput) as exc:
        workflows(root)
    assert exc.value.fix == "inv ci.workflows --ops-repo OWNER/NAME"


def test_hook_webhook_keys_are_passed_from_secrets(root):
    edit(root / "fly" / "stack.toml", "post_deploy = []", 'post_deploy = [{ webhook_key = "CHAT_WEBHOOK" }]')
    job = load(workflows(root, ops_repo="a/b")["deploy-staging.yml"])["jobs"]["deploy"]
    assert job["env"]["CHAT_WEBHOOK"] == "${{ secrets.CHAT_WEBHOOK }}"


def test_yaml_emitter_quotes_what_yaml_would_misread():
    data = {"a": "on", "b": "yes", "c": "12", "d": "x: y", "e": "-x", "f": "${{ x }}", "g": True, "h": 3,
            "i": "a #b", "j": "multi\nline\n", "k": [], "l": {}, "m": ["p", {"q": 1, "r": [1, 2]}], "n": "plain words()"}
    assert load(to_yaml(data)) == data


def test_inv_ci_workflows_writes_into_the_apps_repository(root, tmp_path):
    env = {"FLYOPS_ROOT": str(root), "PATH": "/usr/bin:/bin"}
    inv = Path(sys.executable).with_name("inv")
    app = root / ".." / "my-app"
    p = subprocess.run([str(inv), "ci.workflows", "--ops-repo", "acme/my-app-ops"], env=env, cwd=REPO,
                       capture_output=True, text=True)
    assert p.returncode == 2 and "the app folder" in p.stderr and "--out" in p.stderr, p.stderr
    assert not app.exists()  # no stray .github folder where no app is
    app.mkdir()
    p = subprocess.run([str(inv), "ci.workflows", "--ops-repo", "acme/my-app-ops"], env=env, cwd=REPO,
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    out = (root / ".." / "my-app" / ".github" / "workflows").resolve()
    assert sorted(x.name for x in out.iterdir()) == ["backup-production.yml", "deploy-production.yml", "deploy-staging.yml"]
    p = subprocess.run([str(inv), "ci.workflows", "--ops-repo", "acme/my-app-ops", "--check"], env=env, cwd=REPO,
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    (out / "deploy-staging.yml").write_text("changed")
    p = subprocess.run([str(inv), "ci.workflows", "--ops-repo", "acme/my-app-ops", "--check"], env=env, cwd=REPO,
                       capture_output=True, text=True)
    assert p.returncode == 7


def test_every_generated_action_is_pinned(root):
    (root / ".." / "my-app").mkdir()
    files = workflows(root, ops_repo="acme/my-app-ops", deploys=parse_deploys(None), backup_env="production")
    for name, text in files.items():
        for job in load(text)["jobs"].values():
            for step in job["steps"]:
                if "uses" in step:
                    ref = step["uses"].split("@", 1)[1]
                    assert ref not in ("master", "main", "latest") and ref[0] in "v0123456789abcdef", (name, step)
                if step.get("uses", "").startswith("superfly/flyctl-actions/setup-flyctl@"):
                    assert step["with"]["version"][0].isdigit()
