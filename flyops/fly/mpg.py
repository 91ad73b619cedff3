"""Fly Managed Postgres (`fly mpg`): argv builders, the few steps `up` and the backups take,
and `MpgBackups`, the product's side of `flyops.fly.pitr.PlatformBackups`.

Everything here follows flyctl v0.4.87's source (internal/command/mpg/, v2/run_*.go and
internal/uiex/mpg/v2/client.go for the JSON shapes):

* clusters are named by us and addressed by flyctl by **id**: `mpg list --org O --json` is an
  array of `{id, name, region, status, plan, disk, replicas, organization, ip_assignments:
  {direct}, attached_apps: [{name, id}]}`, but with no cluster at all it prints the text `No
  managed postgres clusters found in organization O` even with `--json` (list.go runList);
* `mpg create` has no `--detach`: it polls until the cluster is `ready` (or fails with
  `cluster creation failed` on `error`) and then prints `  ID: <id>` and `  Connection
  string: <url with the password>` (v2/run_create.go RunCreate): that output is a secret;
* `mpg status ID --json` prints `{"data": {cluster}, "credentials": {status, user, password,
  dbname, pgbouncer_uri}}` (v2/run_status.go, render.JSON of GetClusterResponse): the admin
  credentials a backup connects with, masked the moment they are read;
* `mpg attach ID --app A` sets A's DATABASE_URL (the cluster's pgbouncer URI with the default
  user and database) and prints it; it refuses an app that already has one (`app A already has
  DATABASE_URL set`, v2/run_attach.go), so DATABASE_URL is external to this repository;
* `mpg proxy ID --local-port P` prints `Proxying localhost:P to remote [<direct IP>]:5432`
  and blocks (v2/run_proxy.go, proxy.Connect); it prints no credentials;
* `mpg backup list ID --all --json` is `[{id, status, type, start, stop}]`, or the text `No
  backups found for cluster ID` (v2/run_backup.go RunBackupList); without `--all` only the
  last 24 hours;
* `mpg restore ID --pitr-time RFC3339 | --backup-id B [--name N]` restores into a NEW
  cluster, provisioned asynchronously, and prints `  Cluster ID: <new id>` (restore.go,
  v2/run_restore.go);
* `mpg destroy ID --yes` schedules the cluster's removal (v2/run_destroy.go); an unknown id
  fails with `managed postgres cluster "ID" not found` (mpg.go ClusterFromArgOrSelect).
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from flyops.errors import OpsError
from flyops.fly.flyctl.commands import Call
from flyops.fly.flyctl.runner import FlyctlError, FlyRunner
from flyops.fly.pitr import RestoredCluster, RestoreWindow, rfc3339
from flyops.procs import free_port
from flyops.secret import Secret

PRODUCT = "mpg"
#: how long `up` and a restore wait for a cluster to be `ready` (flyctl's own create loop has
#: no limit; a restore is "provisioned asynchronously": restore.go)
READY_TIMEOUT = 900.0
CREATED_ID = re.compile(r"^\s*ID:\s*(\S+)\s*$", re.M)  # v2/run_create.go
RESTORED_ID = re.compile(r"^\s*Cluster ID:\s*(\S+)\s*$", re.M)  # v2/run_restore.go
CONNECTION = re.compile(r"(postgres(?:ql)?://\S+)")
NOT_FOUND = re.compile(r"managed postgres cluster \"[^\"]*\" not found|[Cc]luster \S+ not found")


# --- builders: pure, argv only ----------------------------------------------------------


def _read(*args: str) -> Call:
    return Call(tuple(args), mutating=False, json="--json" in args)


def _write(*args: str, config: bool = False) -> Call:
    return Call(tuple(args), mutating=True, writes_fly_config=config)


def list_clusters(org: str) -> Call:
    return _read("mpg", "list", "--org", org, "--json")


def status(cluster_id: str) -> Call:
    """Prints the cluster's admin credentials: only `credentials()` reads it."""
    return _read("mpg", "status", cluster_id, "--json")


def create(name: str, org: str, region: str, *, plan: str, volume_size_gb: int, pg_major_version: int,
           postgis: bool = False) -> Call:
    """Every flag create.go would otherwise prompt for (name, region, plan; org) is given."""
    args = ["mpg", "create", "--name", name, "--org", org, "--region", region, "--plan", plan,
            "--volume-size", str(volume_size_gb), "--pg-major-version", str(pg_major_version)]
    if postgis:
        args.append("--enable-postgis-support")
    return _write(*args)


def attach(cluster_id: str, app: str) -> Call:
    """No --username / --database: non-interactive, attach uses the cluster's default user
    and database (v2/run_attach.go). It writes the app's secrets through appsecrets.Update,
    which rewrites flyctl's config.yml minvers: one at a time (the runner serialises it)."""
    return _write("mpg", "attach", cluster_id, "--app", app, config=True)


def proxy(cluster_id: str, local_port: int) -> Call:
    return Call(("mpg", "proxy", cluster_id, "--local-port", str(local_port), "--bind-addr", "127.0.0.1"),
                mutating=False)


def destroy(cluster_id: str) -> Call:
    return _write("mpg", "destroy", cluster_id, "--yes")


def backup_list(cluster_id: str) -> Call:
    return _read("mpg", "backup", "list", cluster_id, "--all", "--json")


def backup_create(cluster_id: str, kind: str = "full") -> Call:
    if kind not in ("full", "incr"):
        raise ValueError("--type must be either 'full' or 'incr'")  # v2/run_backup.go
    return _write("mpg", "backup", "create", cluster_id, "--type", kind)


def restore_call(cluster_id: str, *, new_name: str, at: datetime | None = None, backup_id: str | None = None) -> Call:
    """Exactly one of `at` (sent as RFC3339 in UTC, which restore.go parses with an explicit
    offset) or `backup_id`: restore.go refuses both and neither."""
    if (at is None) == (backup_id is None):
        raise ValueError("one of at or backup_id")
    args = ["mpg", "restore", cluster_id, "--name", new_name]
    if at is not None:
        args += ["--pitr-time", rfc3339(at)]
    else:
        args += ["--backup-id", str(backup_id)]
    return _write(*args)


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)
    except ValueError:
        return None


# --- steps --------------------------------------------------------------------------------


def clusters_named(clusters: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [c for c in clusters or [] if c.get("name") == name]


def pick(clusters: list[dict[str, Any]], name: str, org: str) -> dict[str, Any] | None:
    """The one cluster called `name`, None if there is none. Fly does not keep cluster names
    unique (the API takes any name; flyctl addresses clusters by id), so two are refused."""
    found = clusters_named(clusters, name)
    if len(found) > 1:
        ids = ", ".join(c.get("id", "?") for c in found)
        raise OpsError(f"organization {org} has {len(found)} Managed Postgres clusters named {name!r} ({ids}); "
                       "this repository cannot tell which one is the environment's",
                       fix="destroy or rename the one that is not (fly mpg destroy ID), or set database.app to another name")
    return found[0] if found else None


def find_cluster(runner: FlyRunner, org: str, name: str) -> dict[str, Any] | None:
    return pick(runner.json(list_clusters(org)) or [], name, org)


def require_cluster(runner: FlyRunner, org: str, name: str) -> dict[str, Any]:
    cluster = find_cluster(runner, org, name)
    if cluster is None:
        raise OpsError(f"no Managed Postgres cluster named {name!r} in organization {org}",
                       fix="inv up --env <env> creates it")
    return cluster


def create_mpg_cluster(runner: FlyRunner, call: Call, *, org: str, name: str) -> str:
    """Run `mpg create` (which waits for `ready` itself) and return the new cluster's id.
    Its output carries the connection string: masked here, never shown."""
    try:
        out = runner.run(call)
    except FlyctlError:
        # flyctl fails after the API made the cluster (`cluster creation failed` on status
        # error, or its status poll failing): it exists, so this run changed something
        with contextlib.suppress(OpsError):
            left = find_cluster(runner, org, name)
            if left is not None:
                runner.note_change(f"{runner.shown(call)}  (failed, but cluster {left['id']} exists: "
                                   f"{left.get('status')})")
        raise
    if out.dry:
        return ""
    mask_output(runner, out.stdout)
    m = CREATED_ID.search(out.stdout)
    if m:
        return m.group(1)
    return require_cluster(runner, org, name)["id"]


def mask_output(runner: FlyRunner, text: str) -> None:
    """Connection strings flyctl printed (create, attach): the URL and its password."""
    found = []
    for m in CONNECTION.finditer(text or ""):
        url = m.group(1)
        found.append(Secret(url))
        pw = re.match(r"postgres(?:ql)?://[^:/@]+:([^@]+)@", url)
        if pw:
            found.append(Secret(pw.group(1)))
    runner.add_masks(found)


def wait_ready(runner: FlyRunner, cluster_id: str, *, timeout: float = READY_TIMEOUT, interval: float = 2.0,
               sleep: Callable[[float], None] = time.sleep) -> dict[str, Any]:
    """Poll `mpg status` until the cluster is `ready`; `error` fails at once (run_create.go)."""
    deadline = time.monotonic() + timeout
    while True:
        data = (cluster_status(runner, cluster_id) or {}).get("data") or {}
        state = data.get("status")
        if state == "ready":
            return data
        if state == "error":
            raise OpsError(f"Managed Postgres cluster {cluster_id} is in state error",
                           fix=f"fly mpg status {cluster_id}; destroy it (fly mpg destroy {cluster_id} --yes) and run again")
        if time.monotonic() >= deadline:
            raise OpsError(f"Managed Postgres cluster {cluster_id} is still {state or 'unknown'} after {timeout:.0f}s",
                           fix="run the same command again later: it waits for the cluster that exists")
        sleep(interval)


def cluster_status(runner: FlyRunner, cluster_id: str) -> dict[str, Any]:
    """`mpg status --json` with its credentials masked in this process before anything else."""
    got = runner.json(status(cluster_id), with_secrets=True) or {}  # a second read must see the password too
    creds = got.get("credentials") or {}
    runner.add_masks([Secret(v) for v in (creds.get("password"), creds.get("pgbouncer_uri")) if v])
    return got


def credentials(runner: FlyRunner, cluster_id: str) -> tuple[str, Secret, str]:
    """(user, password, dbname) of the cluster's default credentials; the checks run_proxy.go
    makes before it opens a tunnel, so the error is ours and says what to do."""
    creds = cluster_status(runner, cluster_id).get("credentials") or {}
    if creds.get("status") == "initializing":
        raise OpsError(f"Managed Postgres cluster {cluster_id} is still initializing", fix="wait a minute and run again")
    if not creds.get("password") or not creds.get("user"):
        raise OpsError(f"flyctl returned no credentials for Managed Postgres cluster {cluster_id}",
                       fix=f"fly mpg status {cluster_id}")
    return creds["user"], Secret(creds["password"]), creds.get("dbname") or "postgres"


@contextlib.contextmanager
def connect_cluster(runner: FlyRunner, cluster_id: str, *, dbname: str | None = None) -> Iterator[Secret]:
    """`mpg proxy` on a free local port for as long as the block runs, yielding the admin
    URL (the cluster's default user, its database unless `dbname`) as a Secret."""
    user, password, default_db = credentials(runner, cluster_id)
    with runner.start_proxy(proxy(cluster_id, free_port())) as tunnel:
        yield Secret(f"postgresql://{quote(user, safe='')}:{quote(password.reveal(), safe='')}@127.0.0.1:"
                     f"{tunnel.local_port}/{quote(dbname or default_db, safe='')}")


def destroy_cluster(runner: FlyRunner, cluster_id: str) -> bool:
    """Idempotent: True if it was destroyed now, False if it was already gone."""
    try:
        runner.run(destroy(cluster_id))
    except FlyctlError as exc:
        if NOT_FOUND.search(exc.stderr or ""):
            return False
        raise
    return True


# --- point-in-time backups ------------------------------------------------------------------


def restore_window(cluster_id: str, backups: list[dict[str, Any]]) -> RestoreWindow:
    """From `mpg backup list --all --json`. flyctl v0.4.87 reports backups, not the WAL
    position, so the window it can prove is: earliest = the end of the oldest completed
    full backup (a point-in-time restore needs a base backup that ended before it), latest =
    the end of the newest completed backup of any type (a lower bound: WAL archived since
    is not visible through flyctl), last full = the end of the newest completed full one."""
    done = [b for b in backups or [] if b.get("status") == "completed" and parse_time(b.get("stop"))]
    fulls = sorted(parse_time(b["stop"]) for b in done if b.get("type") == "full")
    return RestoreWindow(
        product=PRODUCT, cluster=cluster_id,
        earliest=fulls[0] if fulls else None,
        latest=max((parse_time(b["stop"]) for b in done), default=None) if fulls else None,
        last_full=fulls[-1] if fulls else None,
    )


class MpgBackups:
    """`PlatformBackups` for one Managed Postgres cluster (flyops/fly/pitr.py)."""

    product = "mpg"

    @property
    def cluster(self) -> str:
        return self.cluster_id

    def __init__(self, runner: FlyRunner, cluster_id: str, *, org: str, ready_timeout: float = READY_TIMEOUT,
                 interval: float = 2.0):
        self.runner, self.cluster_id, self.org = runner, cluster_id, org
        self.ready_timeout, self.interval = ready_timeout, interval

    @classmethod
    def for_stack(cls, stack: Any, runner: FlyRunner, **kw: Any) -> MpgBackups:
        """The environment's cluster (database.source = "mpg"), found by its name."""
        from flyops.stack.model import COMPONENT_DB

        cluster = require_cluster(runner, stack.project.org, stack.app_name(COMPONENT_DB))
        return cls(runner, cluster["id"], org=stack.project.org, **kw)

    def backups(self) -> list[dict[str, Any]]:
        return self.runner.json(backup_list(self.cluster_id)) or []

    def window(self) -> RestoreWindow:
        return restore_window(self.cluster_id, self.backups())

    def restore(self, *, at: datetime | None, new_name: str) -> RestoredCluster:
        """Into a new cluster called `new_name` (refused if one exists: this never touches a
        cluster it did not create). `at` None: the newest completed backup, by id. Waits
        until the new cluster is ready; if it fails after the cluster exists, the new
        cluster is destroyed before the error is raised (a re-run starts clean)."""
        if find_cluster(self.runner, self.org, new_name) is not None:
            raise OpsError(f"a Managed Postgres cluster named {new_name!r} already exists",
                           fix="restore under a new name (this never replaces an existing cluster)")
        backup_id = None
        if at is None:
            win = [b for b in self.backups() if b.get("status") == "completed" and parse_time(b.get("stop"))]
            if not win:
                raise OpsError(f"Managed Postgres cluster {self.cluster_id} has no completed backup to restore",
                               fix=f"fly mpg backup create {self.cluster_id} --type full")
            backup_id = max(win, key=lambda b: parse_time(b["stop"]))["id"]
        try:
            out = self.runner.run(restore_call(self.cluster_id, new_name=new_name, at=at, backup_id=backup_id))
            if out.dry:
                return RestoredCluster(PRODUCT, "", at)
            m = RESTORED_ID.search(out.stdout)
            new_id = m.group(1) if m else require_cluster(self.runner, self.org, new_name)["id"]
            wait_ready(self.runner, new_id, timeout=self.ready_timeout, interval=self.interval)
        except (OpsError, KeyboardInterrupt):
            self._remove_named(new_name)
            raise
        return RestoredCluster(PRODUCT, new_id, at)

    def _remove_named(self, name: str) -> None:
        with contextlib.suppress(OpsError):
            left = find_cluster(self.runner, self.org, name)
            if left is not None:
                destroy_cluster(self.runner, left["id"])

    def connect(self, restored: RestoredCluster) -> contextlib.AbstractContextManager[Secret]:
        return connect_cluster(self.runner, restored.name)

    def destroy(self, restored: RestoredCluster) -> None:
        if restored.name:
            destroy_cluster(self.runner, restored.name)
