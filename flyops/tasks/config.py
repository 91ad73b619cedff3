"""config.*: render, check and show the per-app fly.toml files of an environment."""

from __future__ import annotations

import os

from flyops.errors import ChangesPending, ExitCode, OpsError
from flyops.fly.render import render_all, stale_files
from flyops.present import console, print_json
from flyops.stack.model import environments, load_stack
from flyops.tasks.base import root, runner_for, stack_for, task


@task(help={"env": "environment (fly/<env>.toml), e.g. staging"})
def render(ctx, env):
    """Write fly/<env>/<component>.toml for every app of an environment from the stack (`inv --dry`: print only)."""
    stack = stack_for(env)
    out = console()
    writer = runner_for(ctx)
    for path, text in render_all(stack).items():
        shown = os.path.relpath(path, root())
        state = writer.write_text(path, text, shown=shown)
        out.print(f"{shown}: {state}" + (" (dry run: not written)" if writer.dry and state != "unchanged" else ""))


@task(help={"env": "check one environment (default: every environment with Fly apps)"})
def check(ctx, env=None, json=False):
    """Fail (exit 7) when a rendered fly.toml is stale or missing, or the stack is invalid (for CI)."""
    envs = [env] if env else environments(root())
    problems, stale_envs = [], []
    for name in envs:
        stack = load_stack(root(), name)  # an invalid stack raises BadInput (exit 2)
        if not stack.on_fly:
            continue
        found = [f"{os.path.relpath(p, root())}: {why}" for p, why in stale_files(stack)]
        problems += found
        stale_envs += [name] if found else []
    if json:
        print_json({"envs": envs, "current": not problems, "problems": problems})
    if problems:
        raise ChangesPending(
            "rendered fly.toml files do not match the stack:\n  " + "\n  ".join(problems),
            fix="; ".join(f"inv config.render --env {name}" for name in stale_envs) + ", then commit the result",
        )
    if not json:
        console().print(f"rendered files are current for: {', '.join(envs)}")


@task(help={"env": "environment to show", "json": "print JSON instead of TOML-like text"})
def show(ctx, env, json=False):
    """Print the merged stack of an environment (app names resolved, secrets masked)."""
    stack = stack_for(env)
    data = stack.model.model_dump(mode="json")
    data["app_names"] = {c.name: c.app for c in stack.components()}
    data["env"] = stack.env
    data["backup"]["repository"] = stack.backup_repository()
    try:
        from flyops.stack.envfile import load_env
        from flyops.stack.wanted import wanted_names

        envfile = load_env(root(), env)
        data["secrets"] = {
            comp: {name: ("set" if envfile.exists else "env file missing") for name in sorted(names)}
            for comp, names in wanted_names(stack).items()
        } if stack.on_fly else {}
    except OpsError as exc:
        if exc.code != ExitCode.BAD_INPUT:
            raise
        data["secrets"] = {"error": exc.message}
    if json:
        print_json(data)
        return
    import tomlkit

    console().print(tomlkit.dumps(_strip_none(data)), markup=False)


def _strip_none(value):
    if isinstance(value, dict):
        return {k: _strip_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_strip_none(v) for v in value]
    return value
