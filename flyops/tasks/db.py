"""db.*: Postgres backups into an encrypted restic repository, listing, restores, retention and verification."""

from __future__ import annotations

import sys
from typing import Any

from flyops.db.manifest import REQUESTED_KINDS
from flyops.errors import BadInput
from flyops.present import console, print_json, table
from flyops.stack.envfile import load_env
from flyops.stack.model import environments
from flyops.tasks.base import root, runner_for, stack_for, task
from flyops.tasks.shared import host_for, is_dry, progress_line, seconds, show_plan
from flyops.units import format_bytes, format_duration


@task(help={"env": "environment whose backup repository is created"})
def init(ctx, env, json=False, on=None, ssh_key=None):
    """Create the environment's restic repository and its copies (a Tigris bucket first for "tigris"); a backup never does.

    backup.repository = "tigris": `fly storage create` (org token) when the bucket is not there;
    the keys flyctl prints once go straight into env/<env>.env, never to the screen."""
    from flyops.db import copies as copies_core
    from flyops.db import settings as from_stack
    from flyops.db.restic import Repo

    stack = stack_for(env)
    envfile = load_env(root(), env, must_exist=True)
    bucket = None
    if stack.backup.repository == "tigris":  # the bucket first: `fly storage create`, keys into the env file
        from flyops.fly import tigris

        copies_core.check_tigris_copies(stack)  # bad input before the bucket is made

        made = tigris.ensure_bucket(runner_for(ctx), envfile, bucket=stack.tigris_bucket(), org=stack.project.org,
                                    env=stack.env, endpoint=stack.backup.endpoint,
                                    say=lambda line: console(stderr=True).print(line, markup=False))
        envfile, bucket = made.envfile, {"name": made.bucket, "created": made.created}
        if is_dry(ctx) and made.created:
            show_plan({"dry": True, "task": "db.init", "env": stack.env, "bucket": bucket,
                       "steps": [f"fly storage create --name {made.bucket} --org {stack.project.org} --yes "
                                 f"(keys into {envfile.path}, not shown)", "restic init in the new bucket"]}, json)
            return
    config = from_stack.repo_config(stack, envfile)
    copy_configs = from_stack.copy_configs(stack, envfile, config)
    host = host_for(on, ssh_key)
    repo = Repo(config, host)
    if is_dry(ctx):
        exists = repo.exists()
        steps = [f"repository {repo.location}: {'exists, nothing to do' if exists else 'restic init'}"]
        steps += [f"copy {c.location}: {'exists, nothing to do' if Repo(c, host).exists() else 'restic init --from-repo'}"
                  for c in copy_configs]
        show_plan({"dry": True, "task": "db.init", "env": stack.env, "repository": repo.location, "steps": steps}, json)
        return
    created = repo.init()
    copies_made = copies_core.init_copies(config, copy_configs, host, sources=from_stack.copy_sources(stack))
    if json:
        print_json({"env": stack.env, "repository": repo.location, "created": created, "bucket": bucket,
                    "copies": [{"location": c.location, "created": c.location in copies_made} for c in copy_configs]})
        return
    console().print(f"{'created' if created else 'already there:'} restic repository {repo.location} for {stack.env}",
                    markup=False)
    for c in copy_configs:
        console().print(f"  copy {c.location}: {'created' if c.location in copies_made else 'already there'}",
                        markup=False)


@task(
    help={
        "env": "environment whose database is backed up",
        "init": "first run only: create the repository if there is none (otherwise a missing repository is an error)",
        "reason": "why (kept in the manifest)",
        "if_older_than": "only back up when the newest complete backup is older than this, e.g. 20h (for hourly cron)",
        "kind": "manual (default) or scheduled (cron, timers, the scheduled Fly machine)",
        "json": "print one JSON object (the manifest, or why it was skipped) and nothing else",
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
    from flyops.db import catalog
    from flyops.db import settings as from_stack

    stack = stack_for(env)
    if kind not in REQUESTED_KINDS:
        raise BadInput(f"--kind {kind!r}: use one of {', '.join(REQUESTED_KINDS)}")
    window = seconds("--if-older-than", if_older_than) if if_older_than else None
    envfile = load_env(root(), env, must_exist=True)
    repo = from_stack.repo_config(stack, envfile)
    copy_cfgs = from_stack.copy_configs(stack, envfile, repo)  # bad input before anything runs
    host = host_for(on, ssh_key)
    if is_dry(ctx):
        from flyops.db.plans import backup_plan

        plan = backup_plan(repo, stack.env, {"fly": stack.database.name, "mpg": "the Managed Postgres cluster's"}.get(
                               stack.database.source, "DATABASE_URL's"),
                           host=host, init=init, kind=kind)
        if window is not None and plan["steps"] and not plan["would_fail"] and catalog.should_skip(repo, stack.env, window, host=host):
            plan["steps"] = [plan["steps"][0], f"would skip: the newest backup is younger than {if_older_than}"]
        elif plan["steps"] and not plan["would_fail"]:
            plan["steps"] += [f"restic copy of the environment's backups to {c.location} (backup.copies)" for c in copy_cfgs]
        show_plan(plan, json)
        return
    runner = runner_for(ctx) if stack.database.source in ("fly", "mpg") and not direct else None
    if window is not None and runner is not None and stack.database.source == "mpg":
        from flyops.fly import mpg
        from flyops.stack.model import COMPONENT_DB

        mpg.require_cluster(runner, stack.project.org, stack.app_name(COMPONENT_DB))  # the token works for it
    elif window is not None and runner is not None:
        # a scheduled run that could not reach the database must say so every time, not only
        # once a backup is due: one read of the database app proves the token works for it
        from flyops.fly.flyctl import commands as fly
        from flyops.stack.model import COMPONENT_DB

        runner.json(fly.status(stack.app_name(COMPONENT_DB)))
    if window is not None and catalog.should_skip(repo, stack.env, window, host=host):
        age = catalog.newest_backup_age(repo, stack.env, host=host)
        msg = f"skipped: the newest backup of {stack.env} is {format_duration(age or 0)} old (< {if_older_than})"
        print_json({"skipped": True, "reason": msg, "env": stack.env}) if json else console(stderr=True).print(msg)
        return
    with from_stack.database_url(stack, envfile, runner, direct=direct) as url, \
            progress_line(f"backup of {stack.env}", host, json):
        manifest = core.backup(
            from_stack.backup_source(stack, url), repo, host=host, kind=kind, reason=reason,
            notify=from_stack.notify(envfile), init=init, role_passwords=role_passwords,
        )
    copied = []
    if stack.backup.copies:  # after the backup is complete in the primary: restic copy to each copy
        from flyops.db import copies as copies_core

        copied = copies_core.copy_backup(repo, copy_cfgs, stack.env, manifest["id"], host,
                                         sources=from_stack.copy_sources(stack))
    if json:
        print_json({**_summary(manifest), **({"copies": [c.to_dict() for c in copied]} if copied else {})})
    else:
        out = console()
        out.print(f"backup {manifest['id']} of {stack.env} complete")
        out.print(
            f"  {format_bytes(manifest['bytes'])} dump, {format_bytes(manifest.get('added_bytes') or 0)} added to "
            f"{repo.location}; {sum(manifest['tables'].values())} rows in {len(manifest['tables'])} tables "
            f"(counted in the dump's snapshot); sha256 {manifest['sha256'][:16]}…"
        )
        for c in copied:
            out.print(f"  copy {c.location}: {'ok' if c.ok else 'FAILED'}: {c.detail}", markup=False)
    if copied:
        copies_core.raise_if_failed(copied, manifest["id"], stack.env)


def _summary(m: dict) -> dict:
    keep = ("id", "environment", "database", "kind", "pinned", "who", "ran_on", "reason", "start", "end",
            "server_version", "pg_dump_version", "bytes", "sha256", "extensions", "large_objects",
            "schema_migrations_head", "restic_snapshot", "logical_bytes", "added_bytes")
    return {**{k: m.get(k) for k in keep}, "tables": m.get("tables")}


@task(name="list", help={})
def list_(ctx, env, json=False, on=None, ssh_key=None):
    """List complete backups: when, kind, size, duration, versions, verified, pinned, retention."""
    from flyops.db import catalog
    from flyops.db import settings as from_stack

    stack = stack_for(env)
    envfile = load_env(root(), env, must_exist=True)
    repo = from_stack.repo_config(stack, envfile)
    rows = catalog.list_backups(repo, stack.env, host=host_for(on, ssh_key), retention=from_stack.retention(stack))
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
    envs = environments(root())
    if to != "scratch" and not pgconn.is_conninfo(to) and to not in envs:
        raise BadInput(f"--to {to!r}: use scratch, a postgres URL, or one of {', '.join(envs)}")
    where = from_stack.restore_setup(root(), stack, backup, to)
    src_env, repos, target_env = where.src_env, where.repos, where.target_env
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
    with from_stack.restore_target_url(where.target_stack, to, runner) as url:
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


@task(help={"yes": "apply (default: show what would be dropped)"})
def prune(ctx, env, yes=False, json=False, on=None, ssh_key=None):
    """Apply the stack's retention (daily/weekly/monthly, a minimum, pinned kept); a dry run unless --yes."""
    from flyops.db import settings as from_stack
    from flyops.db.plans import temp_files_text
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
    if result["temp_files"]:
        out.print(f"  {'removed' if result['applied'] else 'would remove'} {temp_files_text(result['temp_files'])} "
                  "of restic processes killed while writing")
    if not yes:
        out.print(f"dry run: nothing was deleted; run `inv db.prune --env {stack.env} --yes` to apply "
                  "(it also reclaims the data of failed or killed uploads)")


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
    envfile = load_env(root(), env, must_exist=True)
    repo = from_stack.repo_config(stack, envfile)
    result = verify_core(
        level, env=stack.env, repo_config=repo, backup=backup, copies=from_stack.copy_configs(stack, envfile, repo),
        max_age=seconds("--max-age", max_age, stack.backup.max_age if level == "fresh" else None),
        smoke_queries=stack.backup.smoke_queries, jobs=stack.backup.jobs,
    )
    if level == "fresh":
        from flyops.db.platform import check_platform_fresh, freshness_limits, platform_backups

        platform = platform_backups(stack, envfile, runner_for(ctx))
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
