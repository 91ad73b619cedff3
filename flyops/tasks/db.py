"""db.*: Postgres backups into an encrypted restic repository, listing, restores and retention."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Any

from flyops.envfile import load_env
from flyops.errors import BadInput
from flyops.present import console, print_json, table
from flyops.secret import Secret
from flyops.stack import environments, load_stack
from flyops.tasks.base import root, runner_for, stack_for, task
from flyops.units import format_bytes, format_duration, parse_duration

KINDS = ("manual", "scheduled")
ON_HELP = "run pg_dump/pg_restore and restic on another machine over SSH (user@host[:port]), e.g. a bastion inside Fly's network"


# The backup core (psycopg, fabric) is imported inside the tasks so `inv --list` stays quick.


def host_for(on: str | None, ssh_key: str | None = None):
    from flyops.hosts import LocalHost, SshHost

    return SshHost.parse(on, key_filename=ssh_key) if on else LocalHost()


def progress_line(title: str, host, quiet: bool):
    """Phases and bytes on a terminal's stderr (flyops.progress); nothing with --json or
    without a TTY. The host's scripts report through `host.progress`."""
    from flyops.progress import ProgressLine, wanted

    line = ProgressLine(title, enabled=wanted(quiet))
    if line.enabled:
        host.progress = line
    return line.shown()


def is_dry(ctx) -> bool:
    """Invoke's global --dry (`inv --dry db.backup ...`)."""
    return bool(getattr(ctx.config.run, "dry", False))


def show_plan(plan: dict, as_json: bool) -> None:
    """Print a dry run's plan (flyops.db.plans): nothing was done."""
    if as_json:
        print_json(plan)
        return
    out = console()
    out.print(f"[dry] {plan['task']} --env {plan['env']}: nothing is done; the plan:", markup=False)
    for i, step in enumerate(plan["steps"], start=1):
        out.print(f"  {i}. {step}", markup=False, soft_wrap=True)


@task(help={"env": "environment whose backup repository is created", "json": "print JSON", "on": ON_HELP,
            "ssh_key": "private key file for --on"})
def init(ctx, env, json=False, on=None, ssh_key=None):
    """Create the environment's restic repository (once, before the first backup; a backup never creates one)."""
    from flyops.db import settings as from_stack
    from flyops.db.restic import Repo

    stack = stack_for(env)
    repo = Repo(from_stack.repo_config(stack, load_env(root(), env, must_exist=True)), host_for(on, ssh_key))
    if is_dry(ctx):
        exists = repo.exists()
        show_plan({"dry": True, "task": "db.init", "env": stack.env, "repository": repo.location,
                   "steps": [f"repository {repo.location}: {'exists, nothing to do' if exists else 'restic init'}"]},
                  json)
        return
    created = repo.init()
    if json:
        print_json({"env": stack.env, "repository": repo.location, "created": created})
        return
    console().print(f"{'created' if created else 'already there:'} restic repository {repo.location} for {stack.env}",
                    markup=False)


@task(
    help={
        "env": "environment whose database is backed up",
        "init": "first run only: create the repository if there is none (otherwise a missing repository is an error)",
        "reason": "why (kept in the manifest)",
        "if_older_than": "only back up when the newest complete backup is older than this, e.g. 20h (for hourly cron)",
        "kind": "manual (default) or scheduled (cron, timers, the scheduled Fly machine)",
        "json": "print one JSON object (the manifest, or why it was skipped) and nothing else",
        "on": ON_HELP,
        "ssh_key": "private key file for --on",
        "direct": "connect straight to the database (inside Fly's private network) instead of through fly proxy",
        "role_passwords": "also record the password hashes of the roles the database uses (secrets even hashed: "
                          "anyone who can read the repository can then try them offline); default: roles "
                          "without passwords, which a restore onto another server creates with no password",
    }
)
def backup(ctx, env, reason="", if_older_than=None, kind="manual", json=False, on=None, ssh_key=None, direct=False,
           role_passwords=False, init=False):
    """Back up the environment's Postgres (pg_dump -Fc -Z0 into restic) with a verified manifest."""
    from flyops.db import backup as core
    from flyops.db import settings as from_stack

    stack = stack_for(env)
    if kind not in KINDS:
        raise BadInput(f"--kind {kind!r}: use one of {', '.join(KINDS)}")
    window = _duration("--if-older-than", if_older_than) if if_older_than else None
    envfile = load_env(root(), env, must_exist=True)
    repo = from_stack.repo_config(stack, envfile)
    host = host_for(on, ssh_key)
    if is_dry(ctx):
        from flyops.db.plans import backup_plan

        plan = backup_plan(repo, stack.env, stack.database.name if stack.database.source == "fly" else "DATABASE_URL's",
                           host=host, init=init, kind=kind)
        if window is not None and plan["steps"] and not plan["would_fail"] and core.should_skip(repo, stack.env, window, host=host):
            plan["steps"] = [plan["steps"][0], f"would skip: the newest backup is younger than {if_older_than}"]
        show_plan(plan, json)
        return
    runner = runner_for(ctx) if stack.database.source == "fly" and not direct else None
    if window is not None and runner is not None:
        # a scheduled run that could not reach the database must say so every time, not only
        # once a backup is due: one read of the database app proves the token works for it
        from flyops.flyctl import commands as fly
        from flyops.stack import COMPONENT_DB

        runner.json(fly.status(stack.app_name(COMPONENT_DB)))
    if window is not None and core.should_skip(repo, stack.env, window, host=host):
        age = core.newest_backup_age(repo, stack.env, host=host)
        msg = f"skipped: the newest backup of {stack.env} is {format_duration(age or 0)} old (< {if_older_than})"
        print_json({"skipped": True, "reason": msg, "env": stack.env}) if json else console(stderr=True).print(msg)
        return
    with from_stack.database_url(stack, envfile, runner, direct=direct) as url, \
            progress_line(f"backup of {stack.env}", host, json):
        manifest = core.backup(
            from_stack.backup_source(stack, url), repo, host=host, kind=kind, reason=reason,
            notify=from_stack.notify(envfile), init=init, role_passwords=role_passwords,
        )
    if json:
        print_json(_summary(manifest))
        return
    out = console()
    out.print(f"backup {manifest['id']} of {stack.env} complete")
    out.print(
        f"  {format_bytes(manifest['bytes'])} dump, {format_bytes(manifest.get('added_bytes') or 0)} added to "
        f"{repo.location}; {sum(manifest['tables'].values())} rows in {len(manifest['tables'])} tables "
        f"(counted in the dump's snapshot); sha256 {manifest['sha256'][:16]}…"
    )


def _summary(m: dict) -> dict:
    keep = ("id", "environment", "database", "kind", "pinned", "who", "ran_on", "reason", "start", "end",
            "server_version", "pg_dump_version", "bytes", "sha256", "extensions", "large_objects",
            "schema_migrations_head", "restic_snapshot", "logical_bytes", "added_bytes")
    return {**{k: m.get(k) for k in keep}, "tables": m.get("tables")}


def _duration(option: str, text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise BadInput(f"{option}: {exc}") from None


@task(name="list", help={"env": "environment", "json": "print JSON", "on": ON_HELP, "ssh_key": "key for --on"})
def list_(ctx, env, json=False, on=None, ssh_key=None):
    """List complete backups: when, kind, size, duration, versions, verified, pinned, retention."""
    from flyops.db import backup as core
    from flyops.db import settings as from_stack

    stack = stack_for(env)
    envfile = load_env(root(), env, must_exist=True)
    repo = from_stack.repo_config(stack, envfile)
    rows = core.list_backups(repo, stack.env, host=host_for(on, ssh_key), retention=from_stack.retention(stack))
    from flyops.db.platform import platform_backups, window_dict, window_line

    platform = platform_backups(stack, envfile, runner_for(ctx))  # Fly's point-in-time layer, if the stack has one
    window = platform.window() if platform is not None else None
    if json:
        print_json({"env": stack.env, "repository": repo.location, "backups": rows,
                    **({"platform": window_dict(window)} if window else {})})
        return
    if window is not None:
        console().print(window_line(window), markup=False)
    if not rows:
        console().print(f"no complete backups of {stack.env} in {repo.location}")
        return
    console().print(
        table(
            f"backups of {stack.env} in {repo.location}",
            ["id", "when", "kind", "dump", "added", "took", "server / pg_dump", "verified", "pinned", "retention"],
            [_list_row(r) for r in rows],
        )
    )
    console().print(f"'until' dates assume {rows[0]['retention']['expires_assuming']}.")


def _list_row(r: dict[str, Any]) -> list[str]:
    v = r.get("verified") or {}
    verified = f"{v.get('level') or '?'} {v.get('result') or '?'} {str(v.get('at') or '')[:10]}".strip() if v else "no"
    ret = r.get("retention") or {}
    keep = ret.get("keep")
    retention = ("keep: " + ", ".join(ret.get("reasons", []))) if keep else "dropped by next prune" if ret else ""
    if keep and not r.get("pinned"):
        retention += f"; until ~{ret['expires'][:10]}" if ret.get("expires") else "; for years"
    took = r.get("duration_s")
    return [
        r["id"], str(r.get("when") or "")[:19], r.get("kind") or "", format_bytes(r.get("bytes") or 0),
        format_bytes(r.get("added_bytes") or 0), format_duration(took) if took is not None else "",
        f"{r.get('server_version') or '?'} / {r.get('pg_dump_version') or '?'}", verified,
        "yes" if r.get("pinned") else "", retention,
    ]


@task(
    help={
        "env": "environment that owns the restore (and whose repository holds BACKUP unless it says ENV::)",
        "backup": "an id, latest, ENV::latest or ENV::ID (restore production's backup elsewhere)",
        "to": "scratch (default: a new database next to the environment's own), a postgres URL, or an environment name",
        "confirm": "the name of the live database you mean to replace (typed at the prompt when interactive)",
        "jobs": "parallel pg_restore jobs (default: backup.jobs from the stack)",
        "on": ON_HELP,
        "ssh_key": "key for --on",
        "json": "print the result as JSON",
        "no_owner": "do not restore owners: every object is owned by the restoring role, so SECURITY DEFINER "
                    "functions run with ITS rights (a superuser's, usually) and the application's roles own nothing",
        "no_acl": "do not restore grants: only the owner can use anything, PUBLIC keeps EXECUTE on every function "
                  "(incl. SECURITY DEFINER ones) and default privileges are gone",
        "include_pre_restore": "let latest be a pinned pre-restore backup (by default latest is the newest backup "
                               "of the database as it was, not the state a restore replaced)",
    }
)
def restore(ctx, env, backup="latest", to="scratch", confirm=None, jobs=None, on=None, ssh_key=None, json=False,
            no_owner=False, no_acl=False, include_pre_restore=False):
    """Restore a backup into a new database; over a live one only with --confirm NAME (swap by rename)."""
    from flyops.db import pgconn
    from flyops.db import settings as from_stack
    from flyops.db.restore import parse_ref, restore_timeline
    from flyops.db.restore import restore as restore_core

    stack = stack_for(env)
    src_env, _ = parse_ref(backup, stack.env)
    envs = environments(root())
    if src_env not in envs:
        raise BadInput(f"backup {backup!r}: unknown environment {src_env!r}", fix=f"use one of {', '.join(envs)}")
    repos = {stack.env: from_stack.repo_config(stack, load_env(root(), stack.env, must_exist=True))}
    if src_env != stack.env:
        other = load_stack(root(), src_env)
        repos[src_env] = from_stack.repo_config(other, load_env(root(), src_env, must_exist=True))
    target_env, target_stack = stack.env, stack
    if to not in ("scratch",) and not pgconn.is_conninfo(to):
        if to not in envs:
            raise BadInput(f"--to {to!r}: use scratch, a postgres URL, or one of {', '.join(envs)}")
        target_env, target_stack = to, load_stack(root(), to)
        repos.setdefault(to, from_stack.repo_config(target_stack, load_env(root(), to, must_exist=True)))
    host = host_for(on, ssh_key)
    jobs = int(jobs or stack.backup.jobs)
    if is_dry(ctx):
        from flyops.db.plans import restore_plan

        _, ref = parse_ref(backup, stack.env)
        show_plan(restore_plan(ref, env=stack.env, src_env=src_env, repo_config=repos[src_env],
                               target=to if to == "scratch" or to in envs else "the database of the --to URL",
                               jobs=jobs, host=host, include_pre_restore=include_pre_restore), json)
        return
    runner = runner_for(ctx)
    with _target_url(target_stack, to, runner) as url:
        target_db = None if to == "scratch" else pgconn.dbname(url)
        shown = progress_line(f"restore into {target_env}", host, json)
        server_url = pgconn.with_dbname(url, "postgres")  # admin SQL (create, rename) runs from here
        if target_db and confirm is None and sys.stdin.isatty() and sys.stdout.isatty():
            confirm = input(f"This replaces database {target_db!r} of {target_env}. Type its name to go on: ").strip()
        with shown:
            result = restore_core(
                backup, env=stack.env, repos=repos, server_url=server_url, target_db=target_db, confirm=confirm,
                target_env=target_env, host=host, jobs=jobs, no_owner=no_owner, no_acl=no_acl,
                include_pre_restore=include_pre_restore,
            )
    if json:
        print_json({k: v for k, v in result.items() if k != "manifest"})
        return
    out = console()
    out.print(f"restored {result['source_env']}::{result['backup_id']} into database {result['database']!r}")
    if result.get("phases"):
        out.print("  " + restore_timeline(result["phases"]))
    if result.get("previous_database"):
        out.print(f"  the replaced database is kept as {result['previous_database']!r} (drop it when satisfied)")
    if result.get("pre_restore_backup"):
        out.print(f"  pinned pre-restore backup: {result['pre_restore_backup']}")
    if result.get("roles_created"):
        out.print(f"  roles created on the target from the backup: {', '.join(result['roles_created'])}")
    for line in result.get("not_applied") or []:
        out.print(f"  not applied: {line}")
    if not (result.get("owners_kept") and result.get("grants_kept")):
        lost = [w for w, kept in (("owners", result.get("owners_kept")), ("grants", result.get("grants_kept"))) if not kept]
        out.print(f"  {' and '.join(lost)} NOT restored (as asked: --no-owner / --no-acl)")


@contextlib.contextmanager
def _target_url(stack, to: str, runner) -> Iterator[Secret]:
    from flyops.db import pgconn
    from flyops.db import settings as from_stack

    if pgconn.is_conninfo(to):
        yield Secret(to)
        return
    envfile = load_env(root(), stack.env, must_exist=True)
    with from_stack.database_url(stack, envfile, runner if stack.database.source == "fly" else None) as url:
        yield url


@task(help={"env": "environment", "yes": "apply (default: show what would be dropped)", "json": "print JSON",
            "on": ON_HELP, "ssh_key": "key for --on"})
def prune(ctx, env, yes=False, json=False, on=None, ssh_key=None):
    """Apply the stack's retention (daily/weekly/monthly, a minimum, pinned kept); a dry run unless --yes."""
    from flyops.db import settings as from_stack
    from flyops.db.prune import prune as prune_core

    stack = stack_for(env)
    repo = from_stack.repo_config(stack, load_env(root(), env, must_exist=True))
    dry = is_dry(ctx)
    result = prune_core(repo, stack.env, from_stack.retention(stack), confirm=yes and not dry, host=host_for(on, ssh_key))
    if dry:
        from flyops.db.plans import prune_plan

        show_plan(prune_plan(result, stack.env, repo.location), json)
        return
    if json:
        print_json(result)
        return
    out = console()
    verb = "dropped" if result["applied"] else "would drop"
    out.print(f"{stack.env}: keep {len(result['keep'])}, {verb} {len(result['drop'])}"
              + (f" (+{len(result['orphans'])} unfinished leftovers)" if result["orphans"] else "")
              + ("; restic prune reclaimed the data no snapshot references" if result["applied"] else ""))
    for bid in result["drop"]:
        out.print(f"  {verb}: {bid}")
    if not yes:
        out.print(f"dry run: nothing was deleted; run `inv db.prune --env {stack.env} --yes` to apply "
                  "(it also reclaims the data of failed or killed uploads)")
