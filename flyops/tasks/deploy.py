"""deploy, rollback, status, audit: shipping an environment and seeing where it stands."""

from __future__ import annotations

import sys

from flyops import audit as audit_trail
from flyops.deploy import DeployResult, deploy_environment
from flyops.errors import OpsError
from flyops.present import console, print_json, table
from flyops.rollback import rollback_environment
from flyops.status import COLUMNS, database_line, read_status, rows
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
        "verbose": "echo every flyctl call with its timing",
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
        "env": "environment (fly/<env>.toml)",
        "app": "one component (default: every app the last deploy changed)",
        "to": "a release of that app (v12) or an image reference (default: the release before the last deploy)",
        "json": "print the result as JSON",
        "verbose": "echo every flyctl call with its timing",
    },
)
def rollback(ctx, env, app=None, to=None, json=False, verbose=False):
    """Redeploy earlier images: by default every app the last deploy touched, to its release before it."""
    stack = stack_for(env)
    runner = runner_for(ctx, verbose=verbose)
    with audit_trail.recorded(stack, runner, "rollback") as outcome:  # an interrupted rollback too
        result = rollback_environment(stack, runner, app=app, to=to, say=say)
        outcome.written = True  # rollback_environment wrote its line (ok / failed, per app)
    _report(result, json, verb="rollback")


@task(name="status", help={"env": "environment (fly/<env>.toml)", "json": "print JSON", "verbose": "echo flyctl calls"})
def status_task(ctx, env, json=False, verbose=False):
    """One table across every app: state, release, image, machines and checks per region, volumes, staged secrets."""
    stack = stack_for(env)
    st = read_status(stack, runner_for(ctx, verbose=verbose))
    if json:
        print_json(st.as_dict())
        return
    out = console()
    out.print(table(f"status of {stack.env}", COLUMNS, rows(st), styles={2: {"missing": "red", "deployed": "green"}}))
    if database_line(st):
        out.print(database_line(st), markup=False)
    out.print(f"lock: {st.lock.describe()}" if st.lock else "lock: free")


@task(name="audit", help={"env": "environment", "limit": "how many lines (newest first; default 20)",
                          "keep": "remove all but the newest KEEP lines first (a retention policy)",
                          "json": "print JSON", "verbose": "echo flyctl calls"})
def audit_task(ctx, env, limit=20, keep=None, json=False, verbose=False):
    """Show the environment's audit trail (kept on Fly in the <project>-ops-<env> app): who changed what, when."""
    from flyops.errors import BadInput

    stack = stack_for(env)
    runner = runner_for(ctx, verbose=verbose)
    if keep is not None:
        if int(keep) < 1:
            raise BadInput("--keep must be at least 1")
        removed = audit_trail.prune(stack, runner, int(keep))
        print(f"removed {len(removed)} audit line(s) older than the newest {keep}", file=sys.stderr)
    found = audit_trail.entries(stack, runner)[: int(limit)]
    if json:
        print_json({"env": stack.env, "app": audit_trail.ops_app(stack), "entries": [e.as_dict() for e in found]})
        return
    console().print(table(f"audit trail of {stack.env} ({audit_trail.ops_app(stack)})",
                          ["when", "who", "task", "changed", "result"],
                          [(e.at, e.who, e.task, e.changed, e.result) for e in found],
                          styles={4: {"ok": "green", "failed": "red"}}))
