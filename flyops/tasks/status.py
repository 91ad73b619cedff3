"""status: one table across every app of an environment."""

from __future__ import annotations

from flyops.fly.status import COLUMNS, database_line, read_status, rows
from flyops.present import console, print_json, table
from flyops.tasks.base import runner_for, stack_for, task


@task(name="status", help={})
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
