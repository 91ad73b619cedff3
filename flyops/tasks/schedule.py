"""schedule.*: backups, prunes and drills from cron or systemd, or as a scheduled Fly Machine."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from flyops.present import console, print_json
from flyops.stack.envfile import load_env
from flyops.tasks.base import root, runner_for, stack_for, task
from flyops.tasks.shared import is_dry


@task(
    name="show",
    help={"user": "run the systemd units as this user (default: the current one)",
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
    from flyops.db.schedule import fly_runner_calls, runner_app_name
    from flyops.db.settings import scheduled_backup_secrets
    from flyops.fly.flyctl.importfmt import encode_for_import
    from flyops.tasks.confirm import confirm

    stack = stack_for(env)
    stack.require_fly()
    envfile = load_env(root(), env, must_exist=True)
    runner = runner_for(ctx)
    values, keys = scheduled_backup_secrets(stack, envfile)
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
