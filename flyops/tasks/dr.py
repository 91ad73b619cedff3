"""dr.*: disaster-recovery drills — restore a backup somewhere new, verify it, time it, report it."""

from __future__ import annotations

from pathlib import Path

from flyops.errors import BadInput
from flyops.present import console, print_json
from flyops.stack.envfile import load_env
from flyops.tasks.base import root, runner_for, stack_for, task
from flyops.tasks.shared import is_dry, seconds, show_plan


@task(
    help={
        "env": "environment whose backup is drilled",
        "backup": "latest (default), random (catches retention-window rot), or an id",
        "target": "local (default: a throwaway PostgreSQL here) or fly (a temporary Fly Postgres app)",
        "rto": "recovery-time target, e.g. 30m (default: backup.rto)",
        "rpo": "data-loss-window target, e.g. 26h (default: backup.rpo)",
        "keep": "keep the scratch server afterwards (prints how to remove it)",
        "report": "report path without extension (default var/drills/<env>/<time>)",
        "json": "print the JSON report on stdout (and nothing else)",
    }
)
def drill(ctx, env, backup="latest", target="local", rto=None, rpo=None, keep=False, report=None, json=False):
    """Restore a backup into a scratch server, verify it, time each phase; report RTO/RPO (exit 6: target missed)."""
    from flyops.db import settings as from_stack
    from flyops.db.drill import run_drill

    stack = stack_for(env)
    repo = from_stack.repo_config(stack, load_env(root(), env, must_exist=True))
    if is_dry(ctx):
        from flyops.db.plans import drill_plan

        if target not in ("local", "fly"):
            raise BadInput(f"--target {target!r}: use local or fly")
        show_plan(drill_plan(env=stack.env, repo_config=repo, backup=backup, target=target,
                             rto=seconds("--rto", rto, stack.backup.rto), rpo=seconds("--rpo", rpo, stack.backup.rpo),
                             jobs=stack.backup.jobs), json)
        return
    from flyops.progress import ProgressLine, wanted

    line = ProgressLine(f"drill of {stack.env}", enabled=wanted(json))
    with line.shown():
        result = run_drill(
            env=stack.env, repo_config=repo, backup=backup, target=_target(ctx, stack, target),
            rto=seconds("--rto", rto, stack.backup.rto), rpo=seconds("--rpo", rpo, stack.backup.rpo),
            smoke_queries=stack.backup.smoke_queries, jobs=stack.backup.jobs, keep=keep,
            report_base=report, root=root(), on_progress=line if line.enabled else None,
        )
    show_drill(result, json)
    result.raise_for_outcome()


def _target(ctx, stack, target: str):
    from flyops.db.drill import FlyTarget, LocalTarget, fly_drill_app_name

    if target == "local":
        return LocalTarget()
    if target != "fly":
        raise BadInput(f"--target {target!r}: use local or fly")
    stack.require_fly()
    runner = runner_for(ctx)
    return FlyTarget(
        app=fly_drill_app_name(stack.project.name, stack.env), org=stack.project.org, region=stack.primary_region,
        run=lambda call: runner.run(call).stdout, spawn=runner.start_proxy,
    )


def show_drill(result, as_json: bool) -> None:
    if as_json:
        print_json(result.to_dict())
        return
    out = console()
    out.print(result.summary())
    for path in result.reports:
        if path.endswith(".md"):
            out.print()
            out.print(Path(path).read_text(encoding="utf-8"), markup=False)
