"""Deploy hooks from the stack: `[hooks] pre_deploy = [...]`, `post_deploy = [...]`.

A hook is either `run = ["argv", ...]`, run from the repository root with the deploy's
facts in its environment (FLYOPS_ENV, FLYOPS_HOOK, FLYOPS_APPS, FLYOPS_IMAGE, FLYOPS_RESULT,
FLYOPS_OPERATOR), or `webhook_key = "KEY"`: the URL in env/<env>.env under KEY (or, in CI,
the environment variable KEY) gets a JSON POST of the same facts, e.g. a chat
notification. The URL is a Secret: it is never printed.

A failing pre-deploy hook aborts the deploy before any app changes (exit 1). A failing
post-deploy hook is reported and recorded, but the deploy has happened and stays.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from flyops.errors import BadInput, OpsError
from flyops.fly.flyctl.runner import FlyRunner
from flyops.procs import operator
from flyops.secret import Secret, redact
from flyops.stack.envfile import load_env
from flyops.stack.model import Hook, Stack

TIMEOUT = 30.0


class HookFailed(OpsError):
    pass


def describe_hook(hook: Hook) -> str:
    return " ".join(hook.run) if hook.run else f"POST to ${hook.webhook_key}"


def _facts_env(event: str, facts: dict[str, Any]) -> dict[str, str]:
    apps = facts.get("apps") or []
    names = [a if isinstance(a, str) else a.get("component", "") for a in apps]
    return {
        "FLYOPS_ENV": str(facts.get("env", "")),
        "FLYOPS_HOOK": event,
        "FLYOPS_APPS": ",".join(names),
        "FLYOPS_IMAGE": str(facts.get("image") or ""),
        "FLYOPS_RESULT": "" if "ok" not in facts else ("ok" if facts["ok"] else "failed"),
        "FLYOPS_OPERATOR": operator(),
    }


def webhook_url(stack: Stack, key: str) -> Secret:
    value = load_env(stack.root, stack.env).get(key)
    if not value and os.environ.get(key):
        value = Secret(os.environ[key])
    if not value:
        raise BadInput(f"hook webhook_key {key}: no value in env/{stack.env}.env nor in the environment",
                       fix=f"add {key}=https://... to env/{stack.env}.env (chmod 600)")
    return value


def run_hook(stack: Stack, runner: FlyRunner, event: str, hook: Hook, facts: dict[str, Any]) -> None:
    """Run one hook; HookFailed with a readable reason (no secret values) when it fails."""
    if hook.run:
        env = {**os.environ, **_facts_env(event, facts)}
        try:
            proc = runner.run_command(list(hook.run), env=env, cwd=stack.root, timeout=600)
        except OpsError:
            raise HookFailed(f"{event} hook `{describe_hook(hook)}` did not finish within 600s") from None
        if proc.rc == 127 and not proc.stdout and proc.stderr.endswith("command not found"):
            raise HookFailed(f"{event} hook `{describe_hook(hook)}`: command not found")
        if proc.rc != 0:
            err = proc.stderr.strip().splitlines()
            raise HookFailed(f"{event} hook `{describe_hook(hook)}` exited {proc.rc}"
                             + (f": {err[-1]}" if err else ""))
        return
    url = webhook_url(stack, hook.webhook_key or "")
    body = json.dumps({"event": event, **_facts_env(event, facts), "facts": facts}, default=str).encode()
    req = urllib.request.Request(url.reveal(), data=body, method="POST",
                                 headers={"Content-Type": "application/json", "User-Agent": "flyops"})
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT) as resp:
            if resp.status >= 300:
                raise HookFailed(f"{event} hook POST to ${hook.webhook_key}: HTTP {resp.status}")
    except urllib.error.HTTPError as exc:
        raise HookFailed(f"{event} hook POST to ${hook.webhook_key}: HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = redact(str(getattr(exc, "reason", exc)), [url])
        raise HookFailed(f"{event} hook POST to ${hook.webhook_key} failed: {reason}") from None


def run_hooks(
    stack: Stack,
    runner: FlyRunner,
    event: str,
    facts: dict[str, Any],
    *,
    say: Callable[[str], None] = print,
    abort: bool = True,
) -> list[str]:
    """Run the stack's hooks for `event` in order. With `abort`, the first failure raises
    (nothing after it runs); otherwise failures are reported and returned."""
    hooks: list[Hook] = list(getattr(stack.model.hooks, event))
    problems: list[str] = []
    for hook in hooks:
        if runner.dry:
            say(f"[dry] {event} hook: {describe_hook(hook)}")
            continue
        say(f"{event} hook: {describe_hook(hook)}")
        try:
            run_hook(stack, runner, event, hook, facts)
        except OpsError as exc:
            if abort:
                raise HookFailed(f"{exc.message}; the deploy was aborted before any app changed",
                                 fix="fix the hook or remove it from [hooks] in fly/stack.toml") from None
            say(f"warning: {exc.message}")
            problems.append(exc.message)
    return problems
