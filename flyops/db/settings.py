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
    keys = ["RESTIC_PASSWORD"] + (["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"] if location.startswith("s3:") else [])
    values = envfile.require(keys, why=f"for the backup repository of {stack.env!r} ({location})")
    return RepoConfig(
        location=location,
        password=values["RESTIC_PASSWORD"],
        aws_access_key_id=values.get("AWS_ACCESS_KEY_ID"),
        aws_secret_access_key=values.get("AWS_SECRET_ACCESS_KEY"),
    )


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
    with mpg.connect(runner, cluster["id"]) as url:
        yield url


def backup_source(stack: Stack, url: Secret) -> BackupSource:
    return BackupSource(url=url, env=stack.env)
