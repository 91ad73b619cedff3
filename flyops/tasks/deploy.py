"""deploy, rollback: shipping an environment, and taking it back."""

from __future__ import annotations

import sys

from flyops.errors import OpsError
from flyops.fly import audit as audit_trail
from flyops.fly.deploy import deploy_environment
from flyops.fly.rollback import rollback_environment
from flyops.fly.waves import DeployResult
from flyops.present import console, print_json, table
from flyops.tasks.base import runner_for, say, stack_for, task

OUTCOME_STYLE = {"deployed": "green", "failed": "red", "not started": "yellow", "checked": "dim", "skipped": "dim"}


def _report(result: DeployResult, as_json: bool, *, verb: str) -> None:
    if as_json:
        print_json(result.as_dict())
    else:
        out = console()
        out.print(table(
            f"{verb} {result.env} in {result.seconds:.1f}s",
            ["component", "app", "result", "release", "seconds", "detail"],
            [(r.component, r.app, r.outcome, r.release(), f"{r.seconds:.1f}", r.detail) for r in result.results],
            styles={2: OUTCOME_STYLE},
        ))
        out.print(result.summary())
        if result.rolled_back is not None:
            rb = result.rolled_back
            out.print("rolled back: " + (", ".join(f"{r.component} {r.release()} ({r.outcome})" for r in rb.results) or "nothing"))
    if not result.ok:
        raise OpsError(
            result.summary(),
            fix=None if result.rolled_back is not None else f"inv rollback --env {result.env}  # takes the deployed apps back",
        )


@task(
    help={
        "env": "environment (fly/<env>.toml), e.g. staging",
        "only": "comma-separated components (e.g. web,worker); default: every app",
        "image": "deploy this prebuilt image to the Rails apps instead of building from project.source",
        "rollback_on_failure": "when an app fails, redeploy the earlier release of every app this run changed",
        "message": "why (shown to whoever finds the environment locked, and in the audit trail)",
        "json": "print the result as JSON",
        },
)
def deploy(ctx, env, only=None, image=None, rollback_on_failure=False, message="", json=False, verbose=False):
    """Deploy an environment in dependency order: stores (and the database check), worker, web."""
    stack = stack_for(env)
    runner = runner_for(ctx, verbose=verbose)
    result = deploy_environment(stack, runner, only=only, image=image, rollback_on_failure=rollback_on_failure,
                                message=message, say=say)
    _report(result, json, verb="deploy")


@task(
    help={
        "app": "one component (default: every app the last deploy changed)",
        "to": "a release of that app (v12) or an image reference (default: the release before the last deploy)",
        "with_data": "also go back to the safe point the last deploy recorded before its migrations: restore it "
                     "into a NEW database and verify it; the swap (apps rolled back, databases renamed) needs --confirm",
        "confirm": "with --with-data: the name of the live database, to swap the application onto the restored copy "
                   "(typed at the prompt when interactive); the live database is kept under a new name",
        "json": "print the result as JSON",
        },
)
def rollback(ctx, env, app=None, to=None, with_data=False, confirm=None, json=False, verbose=False):
    """Redeploy earlier images: by default every app the last deploy touched, to its release before it."""
    stack = stack_for(env)
    runner = runner_for(ctx, verbose=verbose)
    if confirm is not None and not with_data:
        from flyops.errors import BadInput

        raise BadInput("--confirm names the database a --with-data rollback swaps; without --with-data it means nothing",
                       fix=f"inv rollback --env {stack.env} --with-data --confirm DBNAME")
    if with_data:
        _rollback_with_data(stack, runner, app, to, confirm, json)
        return
    with audit_trail.recorded(stack, runner, "rollback") as outcome:  # an interrupted rollback too
        result = rollback_environment(stack, runner, app=app, to=to, say=say)
        outcome.written = True  # rollback_environment wrote its line (ok / failed, per app)
    _report(result, json, verb="rollback")


def _rollback_with_data(stack, runner, app, to, confirm, as_json) -> None:
    from flyops.fly.rollback import rollback_with_data

    def ask(live: str) -> str | None:
        if as_json or not (sys.stdin.isatty() and sys.stdout.isatty()):
            return None
        return input(f"Swap {stack.env} onto the restored copy (the apps rolled back, {live!r} kept under a new "
                     f"name)? Type {live!r} to go on: ").strip()

    with audit_trail.recorded(stack, runner, "rollback") as outcome:
        done = rollback_with_data(stack, runner, confirm=confirm, ask=ask, app=app, to=to, say=say)
        outcome.written = True  # rollback_with_data wrote its line
    if as_json:
        print_json(done.as_dict())
    elif not done.dry:
        out = console()
        if done.apps is not None:
            out.print(table(f"rollback {done.env}", ["component", "app", "result", "release", "detail"],
                            [(r.component, r.app, r.outcome, r.release(), r.detail) for r in done.apps.results],
                            styles={2: OUTCOME_STYLE}))
        if done.swapped:
            out.print(f"database {done.live!r} is now the safe point {done.point.get('backup_id')}; the database it "
                      f"replaced is kept as {done.previous!r} (nothing was dropped)", markup=False)
            out.print("to undo the swap: fly postgres connect --app " + stack.app_name("db") + ", then "
                      + " ".join(done.undo or []), markup=False)
        elif done.restored:
            out.print(f"restored safe point into {done.restored!r} (verified); not swapped: {done.live!r} is "
                      f"unchanged", markup=False)
    if done.apps is not None and not done.apps.ok:
        raise OpsError(f"{done.apps.summary()}; the database was not swapped (restored copy: {done.restored})",
                       fix=f"inv rollback --env {stack.env} --with-data --confirm {done.live} once the apps deploy")
