"""plan: what the stack wants against what Fly has."""

from __future__ import annotations

from flyops.errors import ChangesPending
from flyops.fly.plan import count_actions, pending, plan, read_live
from flyops.present import ACTION_STYLE, console, print_json, rows_json, table
from flyops.tasks.base import runner_for, stack_for, task


@task(
    name="plan",
    help={
        "env": "environment (fly/<env>.toml), e.g. staging",
        "json": "print the rows as JSON",
        },
)
def plan_task(ctx, env, json=False, verbose=False):
    """Show apps, volumes, machines per region and secrets to create / change / keep / remove (exit 7: changes pending)."""
    stack = stack_for(env)
    runner = runner_for(ctx, verbose=verbose)
    rows = plan(stack, read_live(stack, runner))
    counts = count_actions(rows)
    if json:
        print_json({"env": stack.env, "summary": counts, "rows": rows_json(rows), "flyctl_calls": len(runner.records)})
    else:
        out = console()
        out.print(
            table(
                f"plan for {stack.env}",
                ["kind", "component", "app", "target", "action", "detail"],
                [(r.kind, r.component, r.app, r.target, r.action, r.detail) for r in rows],
                styles={4: ACTION_STYLE},
            )
        )
        out.print(", ".join(f"{n} to {a}" for a, n in counts.items()))
    if pending(rows):
        raise ChangesPending(f"{len(pending(rows))} change(s) pending for {stack.env}", fix=f"inv up --env {stack.env}")
