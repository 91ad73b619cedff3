"""From the stack and the env file to the explicit settings the backup core takes.

This is the only place that knows both worlds: `backup.*` and `database.*` in the stack,
RESTIC_PASSWORD / AWS_* / DATABASE_URL / POSTGRES_PASSWORD in env/<env>.env, and how a
Fly Postgres cluster is reached (a `fly proxy` on a free local port, closed afterwards).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from flyops.db.config import BackupSource, Notify, RepoConfig
from flyops.db.retention import Retention
from flyops.errors import BadInput
from flyops.fly.flyctl import commands as fly
from flyops.fly.flyctl.runner import FlyRunner
from flyops.procs import free_port
from flyops.secret import Secret
from flyops.stack.envfile import EnvFile, load_env
from flyops.stack.model import COMPONENT_DB, PG_PORT, Stack, environments, load_stack


def repo_config(stack: Stack, envfile: EnvFile) -> RepoConfig:
    location = stack.backup_repository()
    if location == "tigris":  # the bucket `db.init` made with `fly storage create` (flyops/fly/tigris.py)
        from flyops.fly import tigris

        t = tigris.repository(stack.tigris_bucket(), stack.backup.endpoint, stack.env, envfile)
        values = envfile.require(["RESTIC_PASSWORD"], why=f"for the backup repository of {stack.env!r} ({t.location})")
        return RepoConfig(location=t.location, password=values["RESTIC_PASSWORD"], aws_access_key_id=t.access_key,
                          aws_secret_access_key=t.secret_key, region=t.region)
    keys = ["RESTIC_PASSWORD"] + (["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"] if location.startswith("s3:") else [])
    values = envfile.require(keys, why=f"for the backup repository of {stack.env!r} ({location})")
    return RepoConfig(
        location=location,
        password=values["RESTIC_PASSWORD"],
        aws_access_key_id=values.get("AWS_ACCESS_KEY_ID"),
        aws_secret_access_key=values.get("AWS_SECRET_ACCESS_KEY"),
    )


def copy_configs(stack: Stack, envfile: EnvFile, primary: RepoConfig) -> list[RepoConfig]:
    """backup.copies as repositories: each copy's password from its `password_key`, an S3
    copy's keys from `<keys_prefix>AWS_ACCESS_KEY_ID` / `..._SECRET_ACCESS_KEY`; a pair restic
    cannot copy between in one process (the copy and its source: the primary, or the copy
    `from_copy` names) is BadInput now (flyops.db.copies.check_pair)."""
    from flyops.db.copies import check_pair

    out = []
    for i, (copy, location) in enumerate(zip(stack.backup.copies, stack.copy_locations(), strict=True)):
        keys = [copy.password_key]
        if location.startswith("s3:"):
            keys += [copy.keys_prefix + "AWS_ACCESS_KEY_ID", copy.keys_prefix + "AWS_SECRET_ACCESS_KEY"]
        values = envfile.require(keys, why=f"for backup.copies[{i}] of {stack.env!r} ({location})")
        cfg = RepoConfig(location=location, password=values[copy.password_key],
                         aws_access_key_id=values.get(copy.keys_prefix + "AWS_ACCESS_KEY_ID"),
                         aws_secret_access_key=values.get(copy.keys_prefix + "AWS_SECRET_ACCESS_KEY"),
                         append_only=copy.append_only)
        check_pair(out[copy.from_copy] if copy.from_copy is not None else primary, cfg)
        out.append(cfg)
    return out


def copy_sources(stack: Stack) -> list[int | None]:
    """For each copy, the index of the copy it is copied from (None: the primary)."""
    return [c.from_copy for c in stack.backup.copies]


def retention(stack: Stack) -> Retention:
    return stack.backup.retention


def notify(envfile: EnvFile) -> Notify:
    return Notify(
        heartbeat_url=envfile.get("BACKUP_HEARTBEAT_URL") or None,
        failure_webhook=envfile.get("BACKUP_FAILURE_WEBHOOK_URL") or None,
    )


@contextlib.contextmanager
def database_url(stack: Stack, envfile: EnvFile, runner: FlyRunner | None, *, direct: bool = False) -> Iterator[Secret]:
    """The URL of the environment's database, for as long as the block runs.

    source = "url": DATABASE_URL from the env file.
    source = "fly": `fly proxy <free port>:5432 -a <db app>` until the block ends, then
    postgresql://postgres:<POSTGRES_PASSWORD>@127.0.0.1:<port>/<database.name>.
    source = "mpg": `fly mpg proxy <cluster id>` the same way, with the cluster's own admin
    credentials and database (`fly mpg status --json`, never written anywhere). With
    `direct` (inside Fly's private network, e.g. the scheduled backup machine) no proxy is
    opened: DATABASE_URL from the env file if it has one, else the cluster's `<db app>.internal`.
    """
    if direct and envfile.get("DATABASE_URL"):
        yield envfile.get("DATABASE_URL")
        return
    if stack.database.source == "url":
        yield envfile.require(["DATABASE_URL"], why="(database.source = \"url\")")["DATABASE_URL"]
        return
    if stack.database.source == "mpg":
        with mpg_database_url(stack, envfile, runner, direct=direct) as url:
            yield url
        return
    password = envfile.require(["POSTGRES_PASSWORD"], why="to reach the Fly Postgres cluster")["POSTGRES_PASSWORD"]
    app = stack.app_name(COMPONENT_DB)
    name = stack.database.name
    if direct:
        yield Secret(f"postgresql://postgres:{quote(password.reveal(), safe='')}@{app}.internal:{PG_PORT}/{quote(name, safe='')}")
        return
    if runner is None:
        raise BadInput("a Fly database needs flyctl to open `fly proxy`")
    runner.add_masks([password])
    with runner.start_proxy(fly.proxy(app, free_port(), PG_PORT)) as proxy:
        yield Secret(
            f"postgresql://postgres:{quote(password.reveal(), safe='')}@127.0.0.1:{proxy.local_port}/{quote(name, safe='')}"
        )


@contextlib.contextmanager
def mpg_database_url(stack: Stack, envfile: EnvFile, runner: FlyRunner | None, *, direct: bool) -> Iterator[Secret]:
    """The Managed Postgres cluster named like the stack's database, through `fly mpg proxy`."""
    from flyops.fly import mpg

    if direct:
        raise BadInput("a Managed Postgres cluster is reached directly only through DATABASE_URL in the env file",
                       fix=f"put the cluster's URL in env/{stack.env}.env as DATABASE_URL (fly mpg status ID --json)")
    if runner is None:
        raise BadInput("a Managed Postgres database needs flyctl to open `fly mpg proxy`")
    cluster = mpg.require_cluster(runner, stack.project.org, stack.app_name(COMPONENT_DB))
    with mpg.connect_cluster(runner, cluster["id"]) as url:
        yield url


def backup_source(stack: Stack, url: Secret) -> BackupSource:
    return BackupSource(url=url, env=stack.env)


def scheduled_backup_secrets(stack: Stack, envfile: EnvFile) -> tuple[dict[str, Secret], list[str]]:
    """What the scheduled backup machine gets as Fly secrets: the direct DATABASE_URL, the
    repository and its keys, and the notification keys the env file sets. Returns (values, the
    keys to set, in order). BadInput when the repository is a local folder (a machine on Fly
    cannot reach it) or a needed key is missing."""
    from flyops.db.schedule import runner_secret_keys

    if stack.backup.repository == "tigris" or stack.backup.copies:
        # the machine's entrypoint writes only the keys schedule.RUNNER_SECRET_KEYS names into its
        # env file (no TIGRIS_* keys), and folder copies would land on its throw-away disk
        raise BadInput(f"schedule.fly does not run backups into a Tigris bucket or with backup.copies yet ({stack.env})",
                       fix="run the scheduled backups from a host you keep (schedule.show: cron / systemd lines)")
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
    return values, keys


@dataclass(frozen=True)
class RestoreSetup:
    """Where a restore reads from and writes to, resolved from the stacks and env files."""

    src_env: str  # the environment whose repository holds the backup (`staging::<id>` names another)
    repos: dict[str, RepoConfig]  # every repository the restore may read or write (pre-restore backup)
    target_env: str
    target_stack: Stack


def restore_setup(root: Path, stack: Stack, backup: str, to: str) -> RestoreSetup:
    """Resolve `db.restore --env E --backup [ENV::]REF --to scratch|URL|ENV`. BadInput for an
    unknown environment, naming it and the ones there are."""
    from flyops.db import pgconn
    from flyops.db.restore import parse_ref

    envs = environments(root)
    src_env, _ = parse_ref(backup, stack.env)
    if src_env not in envs:
        raise BadInput(f"backup {backup!r}: unknown environment {src_env!r}", fix=f"use one of {', '.join(envs)}")
    repos = {stack.env: repo_config(stack, load_env(root, stack.env, must_exist=True))}
    if src_env != stack.env:
        repos[src_env] = repo_config(load_stack(root, src_env), load_env(root, src_env, must_exist=True))
    target_env, target_stack = stack.env, stack
    if to != "scratch" and not pgconn.is_conninfo(to):
        if to not in envs:
            raise BadInput(f"--to {to!r}: use scratch, a postgres URL, or one of {', '.join(envs)}")
        target_env, target_stack = to, load_stack(root, to)
        repos.setdefault(to, repo_config(target_stack, load_env(root, to, must_exist=True)))
    return RestoreSetup(src_env, repos, target_env, target_stack)


@contextlib.contextmanager
def restore_target_url(stack: Stack, to: str, runner: FlyRunner | None) -> Iterator[Secret]:
    """The server a restore writes to: the `--to` URL itself, else the target environment's
    database (through `fly proxy` for a Fly cluster) for as long as the block runs."""
    from flyops.db import pgconn

    if pgconn.is_conninfo(to):
        yield Secret(to)
        return
    envfile = load_env(stack.root, stack.env, must_exist=True)
    with database_url(stack, envfile, runner if stack.database.source in ("fly", "mpg") else None) as url:
        yield url

