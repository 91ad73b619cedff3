"""What `inv --dry` prints for the database tasks: the plan of a backup, a restore, a prune or
a drill, built from reads only (the repository's snapshot list, a manifest, `test -f`), so
nothing is written anywhere: no snapshot, no lock, no database, no scratch server, no report.

Each plan is a list of steps (plain sentences, commands shown without secrets) plus the facts
it was built from; the tasks print it, or return it as JSON.
"""

from __future__ import annotations

import shlex
from datetime import UTC, datetime

from flyops.db.backup import DUMP_FILE
from flyops.db.catalog import MANIFEST_FILE, fetch_manifest, find_backup
from flyops.db.config import DEFAULT_TOOLS, RepoConfig, Tools
from flyops.db.hosts import Host, LocalHost
from flyops.db.restic import Repo, tag_value


def _repo_state(repo: Repo) -> tuple[bool, str]:
    exists = repo.exists()
    return exists, f"repository {repo.location}: {'exists' if exists else 'MISSING'} (checked)"


def backup_plan(repo_config: RepoConfig, env: str, database: str, *, host: Host | None = None, init: bool = False,
                kind: str = "manual", tools: Tools = DEFAULT_TOOLS) -> dict:
    """The steps `db.backup` would take; reads only whether the repository exists."""
    repo = Repo(repo_config, host or LocalHost(), tools)
    exists, state = _repo_state(repo)
    steps = [state]
    if not exists and not init:
        steps.append("would STOP here: there is no repository and --init was not given (exit 5)")
        return {"dry": True, "task": "db.backup", "env": env, "repository": repo.location, "steps": steps,
                "would_fail": True}
    if not exists:
        steps.append(f"restic init {repo.location}")
    steps += [
        f"take the backup lock of {env} in the repository (a part=lock snapshot; exit 4 if another is live)",
        f"on {repo.host.name}: pg_dump --format=custom --compress=0 --snapshot=<exported> of database {database!r} "
        f"| tee (SHA-256) | {shlex.join(repo.backup_argv(DUMP_FILE, ['part=dump', 'id=<new id>', f'env={env}', f'kind={kind}'], env))}",
        f"store /{MANIFEST_FILE} (row counts, sizes, versions) as its own snapshot",
        "release the lock (a `released` lock snapshot)",
    ]
    return {"dry": True, "task": "db.backup", "env": env, "repository": repo.location, "database": database,
            "kind": kind, "steps": steps, "would_fail": False}


def restore_plan(ref: str, *, env: str, src_env: str, repo_config: RepoConfig, target: str, jobs: int,
                 host: Host | None = None, tools: Tools = DEFAULT_TOOLS, include_pre_restore: bool = False) -> dict:
    """The steps `db.restore` would take; reads the backup's manifest (one `restic dump`)."""
    repo = Repo(repo_config, host or LocalHost(), tools)
    repo.require()
    dump_snapshot, manifest = fetch_manifest(repo, src_env, ref, include_pre_restore=include_pre_restore)
    steps = [f"backup {src_env}::{manifest['id']} ({manifest['kind']}, {manifest['bytes']} bytes, "
             f"database {manifest['database']!r}, dump snapshot {dump_snapshot[:8]})"]
    if target == "scratch":
        steps.append(f"CREATE DATABASE {manifest['database']}_restore_<timestamp> on {env}'s server (nothing replaced)")
    else:
        steps += [f"target {target}: if the database exists, ask for its name (--confirm) and take a pinned "
                  f"pre-restore backup of it into {env}'s repository first",
                  "CREATE DATABASE <target>_restore_<timestamp> on the target server"]
    steps += [f"on {repo.host.name}: restic dump {dump_snapshot[:8]} /{manifest.get('file', DUMP_FILE)} | "
              f"pg_restore (schema, {jobs} loaders for data, -j {jobs} for indexes and constraints)",
              "ANALYZE"]
    if target != "scratch":
        steps.append("if the target existed: rename it to <target>_pre_<timestamp> and the new database to its name")
    return {"dry": True, "task": "db.restore", "env": env, "backup": f"{src_env}::{manifest['id']}",
            "repository": repo.location, "target": target, "steps": steps}


def temp_files_text(files: list[dict]) -> str:
    """"N temporary files (B bytes)", of `prune`'s temp_files."""
    return f"{len(files)} temporary files ({sum(f['bytes'] for f in files)} bytes)"


def prune_plan(result: dict, env: str, location: str) -> dict:
    """`db.prune`'s plan from `prune(confirm=False)`'s answer (which only reads)."""
    steps = [f"keep {len(result['keep'])} backups"]
    steps += [f"forget backup {bid}" for bid in result["drop"]]
    steps += [f"forget unfinished leftover {bid}" for bid in result["orphans"]]
    if result.get("locks"):
        steps.append(f"forget {len(result['locks'])} released or stale lock snapshots")
    steps.append(f"restic forget {len(result.get('forget') or [])} snapshots, then restic prune {location} "
                 "(also reclaims data of failed or killed uploads)")
    if result.get("temp_files"):
        steps.append(f"remove {temp_files_text(result['temp_files'])} that restic processes killed while writing "
                     "left behind (restic never removes them)")
    return {"dry": True, "task": "db.prune", "env": env, "repository": location, "steps": steps,
            "drop": result["drop"], "orphans": result["orphans"], "keep": result["keep"],
            "temp_files": result.get("temp_files") or []}


def drill_plan(*, env: str, repo_config: RepoConfig, backup: str, target: str, rto: float | None,
               rpo: float | None, jobs: int, tools: Tools = DEFAULT_TOOLS) -> dict:
    """The steps `dr.drill` would take; reads the repository's snapshot list."""
    repo = Repo(repo_config, LocalHost(), tools)
    repo.require()
    if backup == "random":
        chosen = "a random complete backup (chosen when the drill runs)"
    else:
        _dump, man = find_backup(repo, env, backup)
        chosen = f"backup {tag_value(man, 'id')} ({tag_value(man, 'kind')}, taken {tag_value(man, 'start')})"
    where = "a throwaway PostgreSQL on this machine" if target == "local" else "a temporary Fly Postgres app"
    steps = [chosen, f"provision {where}",
             f"restore it streamed (restic dump | pg_restore, {jobs} jobs) and check its SHA-256",
             "verify row counts, migrations head, extensions and smoke queries against the manifest",
             f"time it against RTO {rto:.0f} s and RPO {rpo:.0f} s" if rto and rpo else "time each phase",
             "record the result as a part=verify snapshot and write var/drills/<env>/<time>.json/.md",
             f"remove {where}"]
    return {"dry": True, "task": "dr.drill", "env": env, "repository": repo.location, "steps": steps,
            "at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}


def pitr_drill_plan(*, env: str, layer: str, window: dict, at: str | None, new_app: str, restore_shown: str,
                    destroy_shown: str, logical: dict | None = None) -> dict:
    """The steps `dr.drill --layer pitr|both` would take; `window` is the platform's, read now."""
    steps = list(logical["steps"]) if logical else []
    steps += [f"platform window ({window['product']} {window['cluster']}): {window['earliest']} .. {window['latest']}, "
              f"last full backup {window['last_full']}; the time must lie inside it",
              f"restore into a NEW cluster: {restore_shown}",
              "compare with the logical backups around that time (row counts, schema head, extensions, owners); "
              "RPO from the newest commit timestamp in the restored database",
              f"always remove it: {destroy_shown}",
              "write var/drills/<env>/<time>.json/.md" + (" (both layers in one report)" if logical else "")]
    return {"dry": True, "task": "dr.drill", "env": env, "layer": layer, "at": at or "latest", "new_app": new_app,
            "steps": steps}
