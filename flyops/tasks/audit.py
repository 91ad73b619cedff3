"""audit: the environment's audit trail, who changed what and when."""

from __future__ import annotations

import sys

from flyops.errors import BadInput
from flyops.fly import audit as audit_trail
from flyops.present import console, print_json, table
from flyops.tasks.base import runner_for, stack_for, task


@task(name="audit", help={"limit": "how many lines (newest first; default 20)",
                          "keep": "remove all but the newest KEEP lines first (a retention policy)",
                          })
def audit_task(ctx, env, limit=20, keep=None, json=False, verbose=False):
    """Show the environment's audit trail (kept on Fly in the <project>-ops-<env> app): who changed what, when."""
    stack = stack_for(env)
    runner = runner_for(ctx, verbose=verbose)
    if keep is not None:
        if int(keep) < 1:
            raise BadInput("--keep must be at least 1")
        removed = audit_trail.prune_trail(stack, runner, int(keep))
        print(f"removed {len(removed)} audit line(s) older than the newest {keep}", file=sys.stderr)
    found = audit_trail.entries(stack, runner)[: int(limit)]
    if json:
        print_json({"env": stack.env, "app": audit_trail.ops_app(stack), "entries": [e.as_dict() for e in found]})
        return
    console().print(table(f"audit trail of {stack.env} ({audit_trail.ops_app(stack)})",
                          ["when", "who", "task", "changed", "result"],
                          [(e.at, e.who, e.task, e.changed, e.result) for e in found],
                          styles={4: {"ok": "green", "failed": "red"}}))
