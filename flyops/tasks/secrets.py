"""secrets: what each app wants against what Fly has (names and digests), and pushing the difference."""

from __future__ import annotations

from flyops.errors import ChangesPending, OpsError
from flyops.fly import audit
from flyops.fly.secrets import SyncFailed, SyncResult, lock_path, read_secrets_plan, sync, verify_synced
from flyops.present import console, print_json, rows_json, table
from flyops.stack.envfile import load_env
from flyops.tasks.base import root, runner_for, stack_for, task
from flyops.tasks.confirm import confirm

STATUS_STYLE = {"add": "green", "change": "yellow", "unknown": "yellow", "drift": "bold red",
                "remove": "red", "unchanged": "dim", "external": "dim", "staged": "yellow"}
HELP = {
    "env": "environment (fly/<env>.toml), e.g. staging",
    "app": "only this app: a component name (web, cache) or its Fly app name; default: all but the database",
    "json": "print the rows as JSON",
    }


def _show(plan, json: bool, extra: dict | None = None) -> None:
    if json:
        print_json({"env": plan.stack.env, "summary": plan.counts(), "rows": rows_json(plan.rows),
                    "lock": str(lock_path(plan.stack).relative_to(plan.stack.root)), **(extra or {})})
        return
    out = console()
    out.print(table(f"secrets for {plan.stack.env} (names and digests only; values are never shown)",
                    ["app", "name", "status", "detail"],
                    [(r.app, r.name, r.status, r.detail) for r in plan.rows], styles={2: STATUS_STYLE}))
    out.print(", ".join(f"{n} {s}" for s, n in plan.counts().items() if n))


def _plan(ctx, env, app, verbose):
    stack = stack_for(env)
    stack.require_fly()
    envfile = load_env(root(), stack.env, must_exist=True)
    runner = runner_for(ctx, verbose=verbose)
    return stack, envfile, runner, read_secrets_plan(stack, envfile, runner, app=app)


@task(help=HELP)
def diff(ctx, env, app=None, json=False, verbose=False):
    """Show secrets to add / change / remove per app, drift on Fly, and values staged but not running (exit 7: differences)."""
    stack, _, _, plan = _plan(ctx, env, app, verbose)
    _show(plan, json)
    pending = plan.pending()
    if pending:
        raise ChangesPending(f"{len(pending)} secret(s) differ in {stack.env}", fix=f"inv secrets.sync --env {stack.env}")


@task(name="sync", help={
    **HELP,
    "prune": "also unset secrets the stack no longer wants (asks first, or needs --yes)",
    "yes": "do not ask (needed when not interactive)",
    "force": "overwrite secrets that drifted (changed on Fly outside this repository)",
    "restart": "restart each changed, deployed app once (`fly secrets deploy`); --no-restart when a deploy follows",
})
def sync_(ctx, env, app=None, prune=False, yes=False, force=False, restart=True, json=False, verbose=False):
    """Push secrets that differ (stdin only, staged), record them in fly/<env>/secrets.lock.json, restart once per app."""
    stack, envfile, runner, plan = _plan(ctx, env, app, verbose)
    _show(plan, json)
    todo = [r for r in plan.pending() if r.status not in ("remove", "staged") or (r.status == "remove" and prune)]
    staged = [a for a, live in plan.live.items() if plan.deployed.get(a) and restart
              and any(s.get("status") in ("Staged", "Partial") for s in live or [])]
    if not todo and not staged:
        runner.echo(f"secrets of {stack.env} are in sync")
        return
    if not runner.dry:
        what = f"{len(todo)} secret change(s)" + (f" and a restart of {len(staged)} app(s) with staged secrets" if staged else "")
        removing = [r for r in todo if r.status == "remove"]
        if removing:
            what += f", including UNSETTING {len(removing)} secret(s): " + ", ".join(f"{r.app} {r.name}" for r in removing)
        confirm(f"Apply {what} in {stack.env}?", yes=yes)
    with audit.recorded(stack, runner, "secrets.sync") as outcome:
        try:
            result: SyncResult = sync(plan, runner, prune=prune, force=force, restart=restart, on_step=runner.echo)
        except SyncFailed as exc:
            outcome.changed = exc.result.per_app().replace("\n  ", " | ")
            raise
        pushed = sum(len(v) for v in result.pushed.values())
        outcome.changed = (f"pushed {pushed} secret(s) to {len(result.pushed)} app(s), pruned "
                           f"{sum(len(v) for v in result.pruned.values())}, restarted {len(result.restarted)}")
        outcome.details = {"apps": {a: {"pushed": result.pushed.get(a, []), "pruned": result.pruned.get(a, []),
                                        "restarted": a in result.restarted}
                                    for a in sorted(set(result.pushed) | set(result.pruned) | set(result.restarted))}}
        if runner.dry:
            return
        left = verify_synced(stack, envfile, runner, app=app, prune=prune)
        if left:
            raise OpsError("secrets still differ after sync: " + ", ".join(f"{r.app} {r.name} ({r.status})" for r in left))
    runner.echo(f"{outcome.changed}; commit {lock_path(stack).relative_to(stack.root)}")

