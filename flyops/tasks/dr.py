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
        "layer": "logical (default: this repository's backups), pitr (Fly's point-in-time backups, restored "
                 "into a new cluster) or both (one report)",
        "at": "for pitr: the time to restore to, RFC 3339 or relative (-15m); default latest",
    }
)
def drill(ctx, env, backup="latest", target="local", rto=None, rpo=None, keep=False, report=None, json=False,
          layer="logical", at=None):
    """Restore a backup into a scratch server, verify it, time each phase; report RTO/RPO (exit 6: target missed)."""
    from flyops.db import settings as from_stack
    from flyops.db.drill import run_drill

    stack = stack_for(env)
    repo = from_stack.repo_config(stack, load_env(root(), env, must_exist=True))
    if layer not in ("logical", "pitr", "both"):
        raise BadInput(f"--layer {layer!r}: use logical, pitr or both")
    if at is not None and layer == "logical":
        raise BadInput("--at is for --layer pitr or both (a logical drill restores a whole backup)")
    if layer != "logical" and is_dry(ctx):
        return _drill_pitr_dry(ctx, stack, repo, layer=layer, at=at, backup=backup, target=target,
                               rto=seconds("--rto", rto, stack.backup.rto), rpo=seconds("--rpo", rpo, stack.backup.rpo),
                               as_json=json)
    if layer != "logical":
        return _drill_pitr(ctx, stack, repo, layer=layer, at=at, backup=backup, target=target, keep=keep,
                           rto=seconds("--rto", rto, stack.backup.rto), rpo=seconds("--rpo", rpo, stack.backup.rpo),
                           report=report, as_json=json)
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


def _drill_pitr_dry(ctx, stack, repo, *, layer, at, backup, target, rto, rpo, as_json):
    """--dry: read the window, print the restore and the teardown it would run; create nothing."""
    from flyops.db.pitr_drill import parse_at, pitr_app_name
    from flyops.db.plans import drill_plan, pitr_drill_plan
    from flyops.db.platform import platform_backups, window_dict
    from flyops.fly.flyctl import commands as fly
    from flyops.fly.pgbackup import FlexBackups, backup_restore

    when = parse_at(at)
    runner = runner_for(ctx)
    platform = platform_backups(stack, load_env(root(), stack.env, must_exist=True), runner)
    if platform is None:
        raise BadInput(f"--layer {layer}: {stack.env} has no platform point-in-time backups",
                       fix=f"set database.pitr = true in fly/{stack.env}.toml (database.source = \"fly\"), then inv up")
    new_app = pitr_app_name(stack.project.name, stack.env)
    logical = drill_plan(env=stack.env, repo_config=repo, backup=backup, target=target, rto=rto, rpo=rpo,
                         jobs=stack.backup.jobs) if layer == "both" else None
    show_plan(pitr_drill_plan(env=stack.env, layer=layer, window=window_dict(platform.window()), at=at,
                              new_app=new_app,
                              restore_shown=runner.shown(backup_restore(platform.app, new_app, at=when))
                              if isinstance(platform, FlexBackups) else f"{platform.product} restore into {new_app}",
                              destroy_shown=runner.shown(fly.apps_destroy(new_app)), logical=logical), as_json)


def _drill_pitr(ctx, stack, repo, *, layer, at, backup, target, keep, rto, rpo, report, as_json):
    """--layer pitr | both: flyops/db/pitr_drill.drill_layers; one report."""
    from flyops.db.pitr_drill import drill_layers

    done = drill_layers(stack, load_env(root(), stack.env, must_exist=True), runner_for(ctx), repo, root=root(),
                        layer=layer, at=at, backup=backup, logical_target=lambda: _target(ctx, stack, target),
                        keep=keep, rto=rto, rpo=rpo, report=report)
    if as_json:
        print_json(done.report)
    else:
        out = console()
        for r in done.results:
            out.print(r.summary())
        md = next((p for p in done.pitr.reports if p.endswith(".md")), None)
        if md:
            out.print()
            out.print(Path(md).read_text(encoding="utf-8"), markup=False)
    done.worst().raise_for_outcome()


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
