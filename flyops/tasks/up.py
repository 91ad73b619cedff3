"""up: bring an environment from nothing, or from any partial state, to the stack."""

from __future__ import annotations

import contextlib
import importlib
import threading

from flyops import placement
from flyops.errors import BadInput, OpsError
from flyops.present import ACTION_STYLE, console, print_json, table
from flyops.provision import apply_up, load_envfile, read_up_plan, rows_json, undeployed
from flyops.render import stale_files
from flyops.stores import stale_store_dirs
from flyops.tasks.base import runner_for, stack_for, task
from flyops.tasks.confirm import confirm

STYLE = {**ACTION_STYLE, "attach": "green", "add": "green", "extend": "yellow", "unknown": "yellow",
         "drift": "bold red", "unchanged": "dim", "external": "dim", "extra": "red"}


def _optional(module: str):
    """A module another part of the repository provides (deploy, lock, audit), or None."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name == module:
            return None
        raise


def _one_line_at_a_time(echo):
    mutex = threading.Lock()

    def say(line: str) -> None:
        with mutex:
            echo(line)

    return say


def _show(plan, json: bool) -> None:
    if json:
        print_json({"env": plan.stack.env, "pending": len(plan.pending()), "rows": rows_json(plan.rows)})
        return
    out = console()
    machines = [("machine", r.component, r.app, r.region, r.action, f"{r.have}/{r.want}: {r.detail}")
                for r in plan.placement]
    out.print(table(f"up: {plan.stack.env}", ["kind", "component", "app", "target", "action", "detail"],
                    [(r.kind, r.component, r.app, r.target, r.action, r.detail) for r in plan.rows] + machines,
                    styles={4: STYLE}))
    moves = len(placement.actionable(plan.stack, plan.placement))
    out.print(f"{len(plan.pending())} change(s) pending" + (f", machines to place in {moves} region(s)" if moves else ""))


@task(help={
    "env": "environment (fly/<env>.toml), e.g. staging",
    "yes": "do not ask before changing anything (needed when not interactive)",
    "deploy": "hand over to `inv deploy` for apps never deployed (default); --no-deploy to stop after provisioning",
    "image": "deploy this pre-built image for web/worker instead of building from project.source",
    "force": "overwrite secrets that drifted on Fly (see `inv secrets.diff`)",
    "json": "print the plan as JSON",
    "verbose": "echo every flyctl call with its timing",
})
def up(ctx, env, yes=False, deploy=True, image=None, force=False, json=False, verbose=False):
    """Create what the stack has and Fly lacks: Postgres + attachments, apps, volumes, secrets; then deploy.

    Plan -> confirm -> apply in dependency order -> re-read and fail if anything still differs.
    Convergent: a second run changes nothing (no mutating flyctl call). The Postgres password
    that `fly postgres create` prints once is saved to env/<env>.env as POSTGRES_PASSWORD.
    """
    stack = stack_for(env)
    stack.require_fly()
    envfile = load_envfile(stack)
    runner = runner_for(ctx, verbose=verbose)
    runner.echo = _one_line_at_a_time(runner.echo)  # phases run calls concurrently
    deployer = _optional("flyops.deploy") if deploy else None
    if deploy and deployer is None:
        runner.echo("note: flyops.deploy is not available; `up` provisions only (deploy with `fly deploy`)")
    if deployer is not None:
        stale = stale_store_dirs(stack)
        if stale:
            raise OpsError(
                "store build folders are missing or stale: " + ", ".join(str(p.relative_to(stack.root)) for p, _ in stale),
                fix=f"inv keydb.render --env {stack.env}   (then commit keydb/{stack.env}/)", code=2,
            )
    runner.check_ready()  # flyctl on PATH and a token, before anything is read or changed
    plan = read_up_plan(stack, envfile, runner)
    _show(plan, json)
    todo = plan.pending()
    to_deploy = undeployed(stack, runner) if deployer is not None else []
    moves = placement.actionable(stack, plan.placement) if deployer is not None else []
    if not todo and not to_deploy and not moves:
        runner.echo(f"{stack.env} already matches the stack: nothing to do")
        return
    if to_deploy:
        check_deploy_inputs(stack, to_deploy, image)
    if not runner.dry:
        what = f"{len(todo)} change(s)" + (f" and a first deploy of {', '.join(to_deploy)}" if to_deploy else "")
        what += f", machines in {len(moves)} region(s)" if moves or to_deploy else ""
        confirm(f"Apply {what} to {stack.env}?", yes=yes)
    lock, audit = _optional("flyops.lock"), _optional("flyops.audit")
    recorded = audit.recorded(stack, runner, "up") if audit else contextlib.nullcontext(None)
    try:
        with recorded as outcome:
            _apply(stack, envfile, runner, plan, todo, to_deploy, deployer, lock, outcome, image=image, force=force)
    except OpsError as exc:
        if exc.code != 1:
            raise
        raise OpsError(f"{exc.message}\n  a re-run finishes the job without creating anything twice: "
                       f"inv up --env {stack.env}", fix=exc.fix, code=exc.code) from None


def check_deploy_inputs(stack, to_deploy, image) -> None:
    """What the first deploy needs, checked before `up` changes anything: a Dockerfile in
    project.source (or --image) for the Rails apps, and current rendered fly.toml files."""
    rails = [c for c in to_deploy if c in stack.apps]
    if rails and not image and not (stack.source_dir() / "Dockerfile").is_file():
        raise BadInput(
            f"{', '.join(rails)} would be deployed from {stack.source_dir()} (project.source in fly/stack.toml), "
            "which has no Dockerfile; nothing was changed",
            fix=f"point project.source at the Rails app, or pass --image REF, or provision only: inv up --env {stack.env} --no-deploy",
        )
    stale = [f"{p.relative_to(stack.root)}: {why}" for p, why in stale_files(stack) if p.stem in to_deploy]
    if stale:
        raise BadInput(f"rendered fly.toml files are not current: {'; '.join(stale)}; nothing was changed",
                       fix=f"inv config.render --env {stack.env}   (then commit fly/{stack.env}/)")


def _apply(stack, envfile, runner, plan, todo, to_deploy, deployer, lock, outcome, *, image, force):
    held = lock.deploy_lock(stack, runner, "up", f"inv up: {len(todo)} change(s)") if lock else contextlib.nullcontext()
    with held:
        if not lock:
            runner.echo("note: flyops.lock is not available; running without the deploy lock")
        # under the lock: re-plan, someone may have changed the world since we looked
        plan = read_up_plan(stack, envfile, runner) if lock else plan
        result = apply_up(plan, runner, envfile, restart=True, force=force, say=runner.echo)
        if outcome is not None:
            outcome.changed = result.summary()
        if runner.dry:
            if deployer is not None and to_deploy:
                runner.echo(f"[dry] then deploy {', '.join(to_deploy)}")
            return
        after = read_up_plan(stack, envfile, runner)
        left = after.pending()
        if left:
            raise OpsError("the world still differs from the stack after `up`: "
                           + "; ".join(f"{r.kind} {r.app} {r.target} ({r.action})" for r in left))
        runner.echo(f"provisioned {stack.env}: {result.summary()}")
        if deployer is None:
            return
        to_deploy = undeployed(stack, runner)
        if to_deploy:
            runner.echo(f"handing over to deploy: {', '.join(to_deploy)}")
            if outcome is not None:
                outcome.changed += f"; first deploy of {', '.join(to_deploy)}"
            deployed = deployer.deploy_environment(stack, runner, only=to_deploy, image=image, take_lock=False,
                                                   say=runner.echo)
            if not deployed.ok:
                raise OpsError(f"deploy after provisioning failed: {deployed.summary()}",
                               fix=f"inv deploy --env {stack.env} (provisioning is complete)")
        # `fly deploy` places machines in the primary region only: every other region by scale count
        # (deploy_environment already did it for what it deployed; this covers the rest, and
        # makes no call when nothing differs)
        done = placement.converge(stack, runner, say=runner.echo)
        runner.echo(f"placement: {done.summary()}")
        if outcome is not None and (done.scaled or done.destroyed):
            outcome.changed += f"; placement: {done.summary()}"
