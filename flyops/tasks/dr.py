"""dr.*: disaster-recovery drills — restore a backup somewhere new, verify it, time it, report it.

Also `db.verify` (registered in the db collection by tasks.py) and `demo`, the repository's
main job on a new machine.
"""

from __future__ import annotations

import contextlib
import os
import secrets as pysecrets
import sys
import tempfile
from pathlib import Path

from flyops.envfile import load_env
from flyops.errors import BadInput
from flyops.present import console, print_json, table
from flyops.tasks.base import root, runner_for, stack_for, task
from flyops.tasks.db import is_dry, show_plan
from flyops.units import format_duration, parse_duration


def _seconds(option: str, text: str | None, default: str | None = None) -> float | None:
    text = text if text is not None else default
    if text is None:
        return None
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise BadInput(f"{option}: {exc}") from None


@task(
    help={
        "env": "environment whose backups are verified",
        "backup": "an id or latest (default)",
        "level": "fresh | integrity | decode | restore (default: restore)",
        "max_age": "for fresh: the newest backup must be younger than this (default: backup.max_age)",
        "json": "print the result as JSON",
    }
)
def verify(ctx, env, backup="latest", level="restore", max_age=None, json=False):
    """Verify a backup: fresh, integrity (SHA-256), decode (pg_restore -f /dev/null) or a full restore."""
    from flyops.db import settings as from_stack
    from flyops.db.verify import verify as verify_core

    stack = stack_for(env)
    repo = from_stack.repo_config(stack, load_env(root(), env, must_exist=True))
    result = verify_core(
        level, env=stack.env, repo_config=repo, backup=backup,
        max_age=_seconds("--max-age", max_age, stack.backup.max_age if level == "fresh" else None),
        smoke_queries=stack.backup.smoke_queries, jobs=stack.backup.jobs,
    )
    if level == "fresh":
        from flyops.db.platform import check_platform_fresh, freshness_limits, platform_backups

        platform = platform_backups(stack, load_env(root(), env, must_exist=True), runner_for(ctx))
        if platform is not None:  # Fly's point-in-time layer must be fresh too
            lag, full_age = freshness_limits(stack.database)
            check_platform_fresh(result, platform.window(), max_lag=lag, max_full_age=full_age)
    if json:
        print_json(result.to_dict())
    else:
        console().print(
            table(
                f"verify {stack.env} {result.backup_id or backup} at level {level}: {'PASS' if result.ok else 'FAIL'}",
                ["check", "ok", "detail"],
                [(c.name, "yes" if c.ok else "NO", c.detail) for c in result.checks],
            )
        )
    result.raise_if_failed()


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
                               rto=_seconds("--rto", rto, stack.backup.rto), rpo=_seconds("--rpo", rpo, stack.backup.rpo),
                               as_json=json)
    if layer != "logical":
        return _drill_pitr(ctx, stack, repo, layer=layer, at=at, backup=backup, target=target, keep=keep,
                           rto=_seconds("--rto", rto, stack.backup.rto), rpo=_seconds("--rpo", rpo, stack.backup.rpo),
                           report=report, as_json=json)
    if is_dry(ctx):
        from flyops.db.plans import drill_plan

        if target not in ("local", "fly"):
            raise BadInput(f"--target {target!r}: use local or fly")
        show_plan(drill_plan(env=stack.env, repo_config=repo, backup=backup, target=target,
                             rto=_seconds("--rto", rto, stack.backup.rto), rpo=_seconds("--rpo", rpo, stack.backup.rpo),
                             jobs=stack.backup.jobs), json)
        return
    from flyops.progress import ProgressLine, wanted

    line = ProgressLine(f"drill of {stack.env}", enabled=wanted(json))
    with line.shown():
        result = run_drill(
            env=stack.env, repo_config=repo, backup=backup, target=_target(ctx, stack, target),
            rto=_seconds("--rto", rto, stack.backup.rto), rpo=_seconds("--rpo", rpo, stack.backup.rpo),
            smoke_queries=stack.backup.smoke_queries, jobs=stack.backup.jobs, keep=keep,
            report_base=report, root=root(), on_progress=line if line.enabled else None,
        )
    _show(result, json)
    result.raise_for_outcome()


def _drill_pitr_dry(ctx, stack, repo, *, layer, at, backup, target, rto, rpo, as_json):
    """--dry: read the window, print the restore and the teardown it would run; create nothing."""
    from flyops.db.pitr_drill import parse_at, pitr_app_name
    from flyops.db.plans import drill_plan, pitr_drill_plan
    from flyops.db.platform import platform_backups, window_dict
    from flyops.fly.pgbackup import FlexBackups, backup_restore
    from flyops.flyctl import commands as fly

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
    """--layer pitr | both: the platform's point-in-time restore (flyops/db/pitr_drill.py), and for
    both the logical drill first; one report."""
    from flyops.db.pitr_drill import (
        combined_report,
        logical_manifests,
        parse_at,
        pitr_app_name,
        run_pitr_drill,
    )
    from flyops.db.platform import platform_backups
    from flyops.db.report import default_report_base, write_reports

    when = parse_at(at)
    envfile = load_env(root(), stack.env, must_exist=True)
    platform = platform_backups(stack, envfile, runner_for(ctx))
    if platform is None:
        raise BadInput(f"--layer {layer}: {stack.env} has no platform point-in-time backups",
                       fix=f"set database.pitr = true in fly/{stack.env}.toml (database.source = \"fly\"), then inv up")
    from datetime import UTC, datetime

    started = datetime.now(UTC)
    base = Path(report) if report else default_report_base(root(), stack.env, started)
    layers, results = [], []
    if layer == "both":
        from flyops.db.drill import run_drill

        with tempfile.TemporaryDirectory(prefix="flyops-drill-") as tmp:
            logical = run_drill(env=stack.env, repo_config=repo, backup=backup, target=_target(ctx, stack, target),
                                rto=rto, rpo=rpo, smoke_queries=stack.backup.smoke_queries, jobs=stack.backup.jobs,
                                keep=keep, report_base=Path(tmp) / "logical", root=root())
        layers.append(logical.to_dict())
        results.append(logical)
    from flyops.errors import OpsError

    try:
        manifests = logical_manifests(repo, stack.env, when or datetime.now(UTC))
    except OpsError:  # no logical repository (yet): the drill says nothing brackets the time
        manifests = []
    pitr = run_pitr_drill(env=stack.env, backups=platform, at=when, selection=at or "latest",
                          new_name=pitr_app_name(stack.project.name, stack.env), manifests=manifests,
                          database=stack.database.name, rto=rto, rpo=rpo, report_base=base, root=root(),
                          write=layer == "pitr")
    results.append(pitr)
    if layer == "both":
        layers.append(pitr.to_dict())
        json_path, md_path = write_reports(combined_report(layers), base)
        for r in results:
            r.reports = [str(json_path), str(md_path)]
    if as_json:
        print_json(combined_report(layers) if layer == "both" else pitr.to_dict())
    else:
        out = console()
        for r in results:
            out.print(r.summary())
        md = next((p for p in pitr.reports if p.endswith(".md")), None)
        if md:
            out.print()
            out.print(Path(md).read_text(encoding="utf-8"), markup=False)
    worst = max(results, key=lambda r: ["passed", "target_missed", "failed", "interrupted"].index(r.outcome))
    worst.raise_for_outcome()


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


def _show(result, as_json: bool) -> None:
    if as_json:
        print_json(result.to_dict())
        return
    out = console()
    out.print(result.summary())
    for path in result.reports:
        if path.endswith(".md"):
            out.print()
            out.print(Path(path).read_text(encoding="utf-8"), markup=False)


@task(
    help={
        "keep_repo": "keep the demo's backup repository in var/demo/ (default: removed)",
        "json": "print the drill's JSON report on stdout",
    }
)
def demo(ctx, keep_repo=False, json=False):
    """The main job on a new machine: seed a throwaway PostgreSQL, back it up, run a drill, print the report."""
    from flyops.db.backup import backup as take_backup
    from flyops.db.config import BackupSource, RepoConfig
    from flyops.db.drill import LocalTarget, run_drill
    from flyops.db.sample import SAMPLE_SMOKE_QUERIES, seed_sample
    from flyops.db.scratch import ScratchCluster, sigterm_as_interrupt
    from flyops.secret import Secret

    out = console(stderr=True)
    base = root() / "var" / "demo"
    base.mkdir(parents=True, exist_ok=True)
    repo_dir = Path(tempfile.mkdtemp(prefix="repo-", dir=base))
    repo = RepoConfig(location=str(repo_dir), password=Secret(pysecrets.token_urlsafe(24)))
    with sigterm_as_interrupt(), contextlib.ExitStack() as cleanup:
        if not keep_repo:
            cleanup.callback(_remove_tree, repo_dir)
        out.print("demo: starting a throwaway PostgreSQL and seeding a sample Rails database …")
        source = cleanup.enter_context(ScratchCluster())
        source.start()
        source.psql("CREATE DATABASE app_production")
        counts = seed_sample(source.url("app_production"))
        out.print(f"demo: seeded {sum(counts.values())} rows in {len(counts)} tables; taking db.backup …")
        manifest = take_backup(BackupSource(url=source.url("app_production"), env="demo"), repo, reason="demo",
                               init=True)  # its own throwaway repository
        out.print(f"demo: backup {manifest['id']} stored ({manifest['bytes']} bytes, sha256 {manifest['sha256'][:12]}…);"
                  " running dr.drill against a second throwaway server …")
        result = run_drill(
            env="demo", repo_config=repo, backup="latest", target=LocalTarget(), rto=parse_duration("10m"),
            rpo=parse_duration("26h"), smoke_queries=SAMPLE_SMOKE_QUERIES, root=root(),
        )
    _show(result, json)
    if not json:
        rto = format_duration(result.rto_measured) if result.rto_measured is not None else "not measured"
        out.print(f"demo: measured RTO {rto}; both throwaway servers and the repository were removed. The reports "
                  "stay in var/drills/demo/. Next: cp env/local.env.example env/local.env for your own database.")
    result.raise_for_outcome()


def _remove_tree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


# -- schedule.* ------------------------------------------------------------------------------


@task(
    name="show",
    help={"env": "environment", "user": "run the systemd units as this user (default: the current one)",
          "json": "print JSON: the crontab lines and the systemd units by file name"},
)
def schedule_show(ctx, env, user=None, json=False):
    """Print crontab lines and systemd timer units for hourly backups, daily prune and a weekly drill."""
    from flyops.db.schedule import Schedule, crontab_lines, systemd_units

    stack = stack_for(env)
    venv = Path(sys.prefix)
    sched = Schedule(repo=root().resolve(), venv=venv, env=stack.env, if_older_than=stack.backup.if_older_than)
    units = systemd_units(sched, user=user or os.environ.get("USER"))
    if json:
        print_json({"env": stack.env, "crontab": crontab_lines(sched),
                    "systemd": {f"/etc/systemd/system/{name}": text for name, text in units.items()}})
        return
    out = console()
    out.print("# crontab (crontab -e), times in UTC", markup=False)
    for line in crontab_lines(sched):
        out.print(line, markup=False, soft_wrap=True)
    out.print()
    for name, text in units.items():
        out.print(f"# /etc/systemd/system/{name}", markup=False)
        out.print(text, markup=False)


@task(
    name="fly",
    help={
        "env": "environment whose database the scheduled machine backs up",
        "image": "the backup-runner image (build backup-runner/Dockerfile and push it, e.g. registry.fly.io/APP:TAG)",
        "schedule": "hourly | daily (default) | weekly | monthly",
        "yes": "apply without asking",
    },
)
def schedule_fly(ctx, env, image, schedule="daily", yes=False):
    """Run backups as a scheduled Fly Machine inside the environment's private network (no laptop needed)."""
    from flyops.db.schedule import fly_runner_calls, runner_app_name, runner_secret_keys
    from flyops.db.settings import database_url
    from flyops.flyctl.importfmt import encode_for_import
    from flyops.secret import Secret
    from flyops.tasks.confirm import confirm

    stack = stack_for(env)
    stack.require_fly()
    envfile = load_env(root(), env, must_exist=True)
    runner = runner_for(ctx)
    if not stack.backup_repository().startswith("s3:"):
        raise BadInput(
            f"backup.repository of {stack.env} is a local folder ({stack.backup_repository()}); "
            "a machine on Fly needs S3-compatible storage",
            fix=f"set backup.repository = \"s3:https://...\" in fly/{stack.env}.toml",
        )
    with database_url(stack, envfile, None, direct=True) as direct_url:
        values = {"DATABASE_URL": direct_url, "RESTIC_REPOSITORY": Secret(stack.backup_repository())}
    values.update(envfile.require(["RESTIC_PASSWORD", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"],
                                  why="for the scheduled backup machine"))
    keys = runner_secret_keys({k for k, v in envfile.values.items() if v} | set(values))
    values.update({k: envfile.values[k] for k in keys if k not in values})
    runner.add_masks(values.values())
    payload = encode_for_import({k: values[k] for k in keys})
    calls = fly_runner_calls(image, org=stack.project.org, region=stack.primary_region, env=stack.env,
                             app=runner_app_name(stack.env, prefix=f"{stack.project.name}-backup"),
                             available_keys=set(values), schedule=schedule, if_older_than=stack.backup.if_older_than,
                             payload=payload)
    out = console()
    for step in calls:
        out.print(f"{step['step']}: {runner.shown(step['call'])}"
                  + (f"  (stdin: {', '.join(step['stdin_keys'])})" if step["stdin_keys"] else ""), markup=False)
    if is_dry(ctx):
        out.print("[dry] nothing was created; run without --dry to create the machine", markup=False)
        return
    confirm(f"create the scheduled backup machine for {stack.env}?", yes=yes)
    for step in calls:
        runner.run(step["call"])
    out.print(f"scheduled: {schedule} backups of {stack.env} run inside Fly's private network")
