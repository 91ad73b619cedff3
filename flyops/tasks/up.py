"""up: bring an environment from nothing, or from any partial state, to the stack."""

from __future__ import annotations

import threading

from flyops.errors import OpsError
from flyops.fly import audit, placement
from flyops.fly.provision import load_envfile
from flyops.fly.up import apply_up_plan, check_first_deploy, read_up_work
from flyops.present import ACTION_STYLE, console, print_json, rows_json, table
from flyops.tasks.base import runner_for, stack_for, task
from flyops.tasks.confirm import confirm

STYLE = {**ACTION_STYLE, "attach": "green", "add": "green", "extend": "yellow", "unknown": "yellow",
         "drift": "bold red", "unchanged": "dim", "external": "dim", "extra": "red"}


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
    runner.check_ready()  # flyctl on PATH and a token, before anything is read or changed
    work = read_up_work(stack, envfile, runner, deploy=deploy)
    _show(work.plan, json)
    if work.nothing:
        runner.echo(f"{stack.env} already matches the stack: nothing to do")
        return
    if work.to_deploy:
        check_first_deploy(stack, work.to_deploy, image)
    if not runner.dry:
        confirm(f"Apply {work.describe()} to {stack.env}?", yes=yes)
    try:
        with audit.recorded(stack, runner, "up") as outcome:
            apply_up_plan(stack, envfile, runner, work, outcome, deploy=deploy, image=image, force=force)
    except OpsError as exc:
        if exc.code != 1:
            raise
        raise OpsError(f"{exc.message}\n  a re-run finishes the job without creating anything twice: "
                       f"inv up --env {stack.env}", fix=exc.fix, code=exc.code) from None
