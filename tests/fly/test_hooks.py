"""Deploy hooks: argv commands and webhook POSTs; a failing pre-deploy hook aborts the deploy."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from flyops.errors import BadInput
from flyops.fly import hooks
from flyops.fly.flyctl.runner import FlyRunner
from flyops.stack.model import load_stack
from tests.deploy_env import DeployEnv
from tests.helpers import edit, write_env


@pytest.fixture
def server():
    got: list[dict] = []
    status = {"code": 204}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            body = self.rfile.read(int(self.headers["Content-Length"]))
            got.append({"path": self.path, "type": self.headers["Content-Type"], "body": json.loads(body)})
            self.send_response(status["code"])
            self.end_headers()

        def log_message(self, *a):
            pass

    srv = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_port}/hook/secret-token-123", got, status
    srv.shutdown()


def _hooks(root, text: str) -> None:
    edit(root / "fly" / "stack.toml", "[hooks]\npre_deploy = []\npost_deploy = []", "[hooks]\n" + text)


def _runner(lines=None):
    return FlyRunner(echo=(lines.append if lines is not None else (lambda s: None)))


def test_run_hook_gets_the_deploy_facts_in_its_environment(tmp_path):
    env = DeployEnv(tmp_path, seed=False)
    _hooks(env.root, 'pre_deploy = [{ run = ["sh", "-c", "echo $FLYOPS_HOOK $FLYOPS_ENV $FLYOPS_APPS > hook.out"] }]\npost_deploy = []')
    stack = load_stack(env.root, "staging")
    assert hooks.run_hooks(stack, _runner(), "pre_deploy", {"env": "staging", "apps": ["cable", "web"]}) == []
    assert (env.root / "hook.out").read_text() == "pre_deploy staging cable,web\n"


def test_a_failing_pre_deploy_hook_aborts_and_stops_later_hooks(tmp_path):
    env = DeployEnv(tmp_path, seed=False)
    _hooks(env.root, 'pre_deploy = [{ run = ["sh", "-c", "echo no >&2; exit 3"] }, { run = ["touch", "later"] }]\npost_deploy = []')
    stack = load_stack(env.root, "staging")
    with pytest.raises(hooks.HookFailed) as exc:
        hooks.run_hooks(stack, _runner(), "pre_deploy", {"env": "staging"})
    assert "exited 3: no" in exc.value.message and "aborted before any app changed" in exc.value.message
    assert not (env.root / "later").exists()


def test_post_deploy_failures_are_reported_not_raised(tmp_path):
    env = DeployEnv(tmp_path, seed=False)
    _hooks(env.root, 'pre_deploy = []\npost_deploy = [{ run = ["no-such-command-x"] }, { run = ["touch", "later"] }]')
    stack = load_stack(env.root, "staging")
    lines: list[str] = []
    problems = hooks.run_hooks(stack, _runner(lines), "post_deploy", {"env": "staging", "ok": True}, say=lines.append,
                               abort=False)
    assert problems == ["post_deploy hook `no-such-command-x`: command not found"]
    assert (env.root / "later").exists()


def test_webhook_posts_json_to_the_url_from_the_env_file(tmp_path, server):
    url, got, status = server
    env = DeployEnv(tmp_path, seed=False)
    write_env(env.root, "staging", {"CHAT_WEBHOOK": url})
    _hooks(env.root, 'pre_deploy = []\npost_deploy = [{ webhook_key = "CHAT_WEBHOOK" }]')
    stack = load_stack(env.root, "staging")
    lines: list[str] = []
    hooks.run_hooks(stack, _runner(lines), "post_deploy", {"env": "staging", "ok": True, "apps": [{"component": "web"}]},
                    say=lines.append)
    [req] = got
    assert req["path"] == "/hook/secret-token-123" and req["type"] == "application/json"
    assert req["body"]["event"] == "post_deploy" and req["body"]["FLYOPS_RESULT"] == "ok"
    assert req["body"]["FLYOPS_APPS"] == "web"
    assert lines == ["post_deploy hook: POST to $CHAT_WEBHOOK"]  # the URL is a secret: never shown
    status["code"] = 500
    with pytest.raises(hooks.HookFailed) as exc:
        hooks.run_hooks(stack, _runner(), "post_deploy", {"env": "staging"})
    assert "HTTP 500" in exc.value.message and "secret-token" not in exc.value.message


def test_webhook_key_without_a_value_is_bad_input(tmp_path, monkeypatch):
    env = DeployEnv(tmp_path, seed=False)
    _hooks(env.root, 'pre_deploy = [{ webhook_key = "CHAT_WEBHOOK" }]\npost_deploy = []')
    stack = load_stack(env.root, "staging")
    monkeypatch.delenv("CHAT_WEBHOOK", raising=False)
    with pytest.raises(BadInput):
        hooks.webhook_url(stack, "CHAT_WEBHOOK")
    monkeypatch.setenv("CHAT_WEBHOOK", "http://ci.example/x")  # CI passes it as an environment variable
    assert hooks.webhook_url(stack, "CHAT_WEBHOOK").reveal() == "http://ci.example/x"


def test_inv_deploy_with_a_failing_pre_deploy_hook_deploys_nothing(tmp_path):
    env = DeployEnv(tmp_path)
    _hooks(env.root, 'pre_deploy = [{ run = ["false"] }]\npost_deploy = []')
    assert env.inv("config.render", "--env", "staging").returncode == 0  # the stack digest changed
    p = env.inv("deploy", "--env", "staging")
    assert p.returncode == 1
    assert "pre_deploy hook `false` exited 1; the deploy was aborted before any app changed" in p.stderr
    assert not [r for r in env.argv_log() if r["argv"][0] == "deploy"]
    assert "my-app-lock-staging" not in {a["Name"] for a in env.fly_json("apps", "list")}  # lock given back


def test_inv_deploy_runs_post_deploy_hook_with_the_result(tmp_path, server):
    url, got, _ = server
    env = DeployEnv(tmp_path)
    write_env(env.root, "staging", {"CHAT_WEBHOOK": url})
    _hooks(env.root, 'pre_deploy = []\npost_deploy = [{ webhook_key = "CHAT_WEBHOOK" }]')
    assert env.inv("config.render", "--env", "staging").returncode == 0
    p = env.inv("deploy", "--env", "staging", "--only", "web")
    assert p.returncode == 0, p.stderr
    [req] = got
    assert req["body"]["facts"]["ok"] is True and req["body"]["facts"]["on_new_release"] == ["web"]
