"""From the stack and the env file to the explicit settings the backup core takes.

This is the only place that knows both worlds: `backup.*` and `database.*` in the stack,
RESTIC_PASSWORD / AWS_* / DATABASE_URL / POSTGRES_PASSWORD in env/<env>.env, and how a
Fly Postgres cluster is reached (a `fly proxy` on a free local port, closed afterwards).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from urllib.parse import quote

from flyops.db.config import BackupSource, Notify, RepoConfig, Retention
from flyops.envfile import EnvFile
from flyops.errors import BadInput
from flyops.flyctl import commands as fly
from flyops.flyctl.runner import FlyRunner, free_port
from flyops.secret import Secret
from flyops.stack import COMPONENT_DB, Stack

PG_PORT = 5432


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
    r = stack.backup.retention
    return Retention(daily=r.daily, weekly=r.weekly, monthly=r.monthly, minimum=r.minimum, pinned_days=r.pinned_days)


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
    postgresql://postgres:<POSTGRES_PASSWORD>@127.0.0.1:<port>/<database.name>. With
    `direct` (inside Fly's private network, e.g. the scheduled backup machine) no proxy is
    opened: DATABASE_URL from the env file if it has one, else the cluster's `<db app>.internal`.
    """
    if direct and envfile.get("DATABASE_URL"):
        yield envfile.get("DATABASE_URL")
        return
    if stack.database.source == "url":
        yield envfile.require(["DATABASE_URL"], why="(database.source = \"url\")")["DATABASE_URL"]
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


def backup_source(stack: Stack, url: Secret) -> BackupSource:
    return BackupSource(url=url, env=stack.env)
