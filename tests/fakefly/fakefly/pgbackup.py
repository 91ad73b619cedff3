"""`postgres backup enable|create|list|config show|config update|restore` and `postgres create
--enable-backups`: a flex cluster's WAL archiving to Tigris, modelled from flyctl v0.4.87
internal/command/postgres/backup.go (and flypg/launcher.go, flypg/tigris.go) plus what the image's
flexctl prints (fly-apps/postgres-flex cmd/flexctl/backups.go, internal/flypg/barman*.go).

State: `app["pg_backups"] = {"bucket", "config": {archive_timeout, recovery_window,
full_backup_frequency, minimum_redundancy}, "backups": [{backup_id, backup_name, status,
begin_time, end_time, begin_wal, end_wal}]}` (barman-cloud-backup-list's JSON fields). Backups
are "enabled" when the app has the secret S3_ARCHIVE_CONFIG (backup.go isBackupEnabled); flexctl,
on the machine, sees it only once a machine runs with it (`backupsEnabled()` reads the env var).

The data plane is a hook ($FAKEFLY_PITR_HOOK, tests/pitr_hook.py), called as

    $FAKEFLY_PITR_HOOK restore --product flex --source APP --target NEW --at RFC3339|latest|name:ID --home H
    $FAKEFLY_PITR_HOOK destroy --product flex --target NEW --home H          (from `apps destroy`)
    $FAKEFLY_PITR_HOOK backup  --product flex --source APP --home H          (this module only: `backup create`)

`backup` prints one JSON object (the barman fields above); without a hook `backup create`
records a catalogue entry with no data behind it.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
from datetime import UTC, datetime

from . import cli, flyconfig
from . import model as M
from . import state as S
from .cli import FlyError, record_event
from .commands import (
    PG_NOTICE,
    _pw,
    _store_secrets,
    app_name,
    bump_secrets_version,
    err,
    handler,
    health_ok,
    machine_env,
    nargs,
    out,
)

cli.MUTATING.update({("postgres", "backup", "enable"), ("postgres", "backup", "create"),
                     ("postgres", "backup", "config", "update"), ("postgres", "backup", "restore")})

BARMAN_SECRET = "S3_ARCHIVE_CONFIG"
#: barman_config.go SetDefaults
DEFAULTS = {"archive_timeout": "60s", "recovery_window": "7d", "full_backup_frequency": "24h", "minimum_redundancy": "3"}
HOOK_ENV = "FAKEFLY_PITR_HOOK"


def not_enabled(name: str) -> FlyError:
    return FlyError(f"backups are not enabled. Run `fly pg backup enable -a {name}` to enable them")


def _active(app: dict) -> list[dict]:
    return [m for m in app["machines"] if M.is_active(m)]


def _flex_cluster(st: dict, name: str) -> tuple[dict, dict]:
    """The checks every backup subcommand makes first: ListActive (else "No active machines"),
    IsFlex (the machines carry fly-managed-postgres metadata; our clusters are all flex)."""
    app = st["apps"].get(name)
    if app is None:
        raise FlyError(f'Could not find App "{name}"')
    machines = _active(app)
    if not machines:
        raise FlyError("No active machines")
    if app.get("postgres_role") != "postgres_cluster":
        raise FlyError("backups are only supported on Flexclusters")
    leader = next((m for m in machines if m["state"] == "started"), machines[0])
    return app, leader


def _enabled(app: dict) -> bool:
    return BARMAN_SECRET in app["secrets"]


def _memory_mb(m: dict) -> int:
    return int(((m.get("config") or {}).get("guest") or {}).get("memory_mb") or 256)


def bucket_secret(app_name_: str, bucket: str) -> str:
    # flypg/tigris.go CreateTigrisBucket: https://<key>:<secret>@<endpoint>/<bucket>/<app>
    return f"https://tid_{_pw(20)}:tsec_{_pw(40)}@fly.storage.tigris.dev/{bucket}/{app_name_}"


def _new_bucket(st: dict, name: str) -> str:
    """CreateTigrisBucket names the bucket `<app>-postgres`, then `-1`, `-2` on a taken name."""
    taken = {a.get("pg_backups", {}).get("bucket") for a in st["apps"].values()}
    bucket, i = f"{name}-postgres", 1
    while bucket in taken:
        bucket, i = f"{name}-postgres-{i}", i + 1
    return bucket


def on_create(st: dict, app: dict, opts: dict, memory_mb: int) -> str | None:
    """`postgres create --enable-backups`, inside pg_create's state change (launcher.go order:
    the memory check before anything is created, the bucket after the IP address, the secret
    with the cluster's other secrets). Returns the bucket name or None."""
    if not opts.get("enable-backups"):
        return None
    bucket = _new_bucket(st, app["name"])
    app["secrets"][BARMAN_SECRET] = S.secret_record(bucket_secret(app["name"], bucket))
    app["pg_backups"] = {"bucket": bucket, "config": dict(DEFAULTS), "backups": []}
    return bucket


def check_create(opts: dict, memory_mb: int) -> None:
    if opts.get("enable-backups") and memory_mb < 512:  # launcher.go LaunchMachinesPostgres
        raise FlyError("Backups require at least 512MB of memory. Please use a larger VM size or disable backups.")


@handler("postgres backup enable")
def backup_enable(home, opts, args):
    err(PG_NOTICE)
    nargs(args, 0, 0)
    name = app_name(opts)
    st = S.load(home)
    app = st["apps"].get(name)
    if app is None:
        raise FlyError(f'Could not find App "{name}"')
    if app.get("postgres_role") != "postgres_cluster":
        raise FlyError(f"app {name} is not a postgres app")
    if _enabled(app):
        raise FlyError("backups are already enabled")
    _, leader = _flex_cluster(st, name)
    if _memory_mb(leader) < 512:
        raise FlyError(f"backup creation requires at least 512MB of memory. Use `fly m update {leader['id']} "
                       "--vm-memory 512` to scale up.")
    out("Creating Tigris bucket for backup storage")
    with S.mutate(home) as st:
        app = st["apps"][name]
        bucket = _new_bucket(st, name)
        app["pg_backups"] = {"bucket": bucket, "config": dict(DEFAULTS), "backups": []}
        secret = bucket_secret(name, bucket)
    _store_secrets(home, name, {BARMAN_SECRET: secret})  # appsecrets.Update: staged until a restart
    record_event(home, {"type": "postgres_backup_enable", "app": name, "bucket": bucket})
    out(f"Backups enabled. Run `fly secrets deploy -a {name}` to restart the cluster with the new configuration.")
    return 0


def _flexctl_enabled(app: dict, machine: dict) -> bool:
    """flexctl's backupsEnabled(): the env var on the machine it runs on."""
    return bool(machine_env(app, machine).get(BARMAN_SECRET))


def _exec_flexctl(app: dict, machine: dict, fn) -> int:
    """ExecOnMachine: prints the remote stdout and stderr and returns nil whatever the remote
    exit status was, so flexctl's own errors (cobra prints `Error: ...`) come with exit 0."""
    if not _flexctl_enabled(app, machine):
        err("Error: backups are not enabled")
        return 0
    fn()
    return 0


@handler("postgres backup list")
def backup_list(home, opts, args):
    err(PG_NOTICE)  # every `postgres` subcommand (flyctl.md §9)
    nargs(args, 0, 0)
    name = app_name(opts)
    st = S.load(home)
    app, _ = _flex_cluster(st, name)
    machine = _active(app)[0]  # runBackupList: machines[0], not the leader
    if not _enabled(app):
        raise not_enabled(name)

    def table():
        rows = (app.get("pg_backups") or {}).get("backups") or []
        if not rows:
            out("No backups found")
            return
        cells = [[b["backup_id"], b.get("backup_name") or "", b["status"], b.get("end_time") or "",
                  b.get("begin_wal") or ""] for b in rows]
        head = ["ID/NAME", "ALIAS", "STATUS", "END TIME", "BEGIN WAL"]  # tablewriter upper-cases headers
        widths = [max(len(r[i]) for r in [head, *cells]) for i in range(5)]
        rule = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
        out(rule)
        out("| " + " | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)) + " |")
        out(rule)
        for r in cells:
            out("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |")
        out(rule)

    return _exec_flexctl(app, machine, table)


@handler("postgres backup create")
def backup_create(home, opts, args):
    err(PG_NOTICE)  # every `postgres` subcommand (flyctl.md §9)
    nargs(args, 0, 0)
    name = app_name(opts)
    st = S.load(home)
    app, leader = _flex_cluster(st, name)
    if not _enabled(app):
        raise not_enabled(name)
    if _memory_mb(leader) < 512:
        raise FlyError(f"backup creation requires at least 512MB of memory. Use `fly m update {leader['id']} "
                       "--vm-memory 512` to scale up.")
    if not _flexctl_enabled(app, leader):
        err("Error: backups are not enabled")
        return 0
    alias = opts.get("name") or ""
    existing = (app.get("pg_backups") or {}).get("backups") or []
    if alias and any(b.get("backup_name") == alias for b in existing):  # barman.go validateBackupName
        err(f"Error: failed to create backup: backup name '{alias}' already exists")
        return 0
    out("Performing backup...")
    hook = os.environ.get(HOOK_ENV)
    if hook:
        p = subprocess.run([hook, "backup", "--product", "flex", "--source", name, "--home", str(home)],
                           capture_output=True, text=True)
        if p.returncode != 0:
            err(f"Error: failed to create backup: {p.stderr.strip()[-400:]}")
            return 0
        rec = json.loads(p.stdout)
    else:
        now = datetime.now(UTC)
        stamp = now.replace(tzinfo=None).ctime()  # barman's times are ctime() (infofile.py), UTC on Fly
        rec = {"backup_id": now.strftime("%Y%m%dT%H%M%S"), "status": "DONE", "begin_time": stamp,
               "end_time": stamp, "begin_wal": f"0000000100000000{random.randint(1, 255):08X}", "end_wal": ""}
    rec["backup_name"] = alias
    with S.mutate(home) as st:
        st["apps"][name].setdefault("pg_backups", {"bucket": "", "config": dict(DEFAULTS), "backups": []})
        st["apps"][name]["pg_backups"]["backups"].append(rec)
    out("Backup completed successfully!")
    return 0


@handler("postgres backup config show")
def backup_config_show(home, opts, args):
    err(PG_NOTICE)  # every `postgres` subcommand (flyctl.md §9)
    nargs(args, 0, 0)
    name = app_name(opts)
    st = S.load(home)
    app, leader = _flex_cluster(st, name)
    if not _enabled(app):
        raise not_enabled(name)

    def show():
        cfg = {**DEFAULTS, **((app.get("pg_backups") or {}).get("config") or {})}
        window = cfg["recovery_window"]
        for unit, text in (("m", "MONTHS"), ("w", "WEEKS"), ("d", "DAYS")):  # convertRecoveryWindowDuration
            if window.endswith(unit):
                window = window[:-1] + " " + text
                break
        out(f"  ArchiveTimeout = {cfg['archive_timeout']}")
        out(f"  RecoveryWindow = RECOVERY WINDOW OF {window}")
        out(f"  FullBackupFrequency = {cfg['full_backup_frequency']}")
        out(f"  MinimumRedundancy = {cfg['minimum_redundancy']}")

    return _exec_flexctl(app, leader, show)


_GO_DURATION = re.compile(r"^(\d+(\.\d+)?(h|m|s|ms))+$")


def _validate(key: str, value: str) -> str | None:
    """barman_config.go Validate, per key."""
    if key in ("archive_timeout", "full_backup_frequency"):
        if not _GO_DURATION.match(value):
            return f"invalid value for {key}: {value}"
        if key == "full_backup_frequency":
            secs = sum(float(n) * {"h": 3600, "m": 60, "s": 1, "ms": 0.001}[u]
                       for n, _, u in re.findall(r"(\d+(\.\d+)?)(h|ms|m|s)", value))
            if secs < 3600:
                return f"invalid value for full_backup_frequency (expected to be >= 1h, got {value})"
    if key == "recovery_window" and not re.match(r"^(\d+)([dwy])$", value):
        return f"invalid value for recovery_window: {value}"
    if key == "minimum_redundancy" and (not value.lstrip("-").isdigit() or int(value) < 0):
        return f"invalid value for minimum_redundancy: {value}"
    return None


@handler("postgres backup config update")
def backup_config_update(home, opts, args):
    err(PG_NOTICE)  # every `postgres` subcommand (flyctl.md §9)
    nargs(args, 0, 0)
    name = app_name(opts)
    st = S.load(home)
    app, leader = _flex_cluster(st, name)
    if not _enabled(app):
        raise not_enabled(name)
    keys = ("archive_timeout", "recovery_window", "full_backup_frequency", "minimum_redundancy")
    changes = {k: opts[k.replace("_", "-")] for k in keys if opts.get(k.replace("_", "-"))}

    def update():
        if not changes:  # flexctl's PreRunE
            err("Error: at least one flag must be specified")
            return
        for k, v in changes.items():
            problem = _validate(k, v)
            if problem:
                err(f"Error: error updating configuration: {problem}")
                return
        with S.mutate(home) as st:
            st["apps"][name].setdefault("pg_backups", {"bucket": "", "config": dict(DEFAULTS), "backups": []})
            st["apps"][name]["pg_backups"]["config"].update(changes)
        # the admin API's answer: archive_timeout is a postgresql.conf setting (restart needed)
        out("Updated barman configuration")
        if "archive_timeout" in changes:
            out(f"A restart is required for these changes to take effect. Run `fly pg restart -a {name}` to restart.)")

    return _exec_flexctl(app, leader, update)


def _restore_target(opts: dict) -> str:
    """resolveRestoreTarget: time wins over name; neither -> latest."""
    if opts.get("restore-target-time"):
        return opts["restore-target-time"]
    if opts.get("restore-target-name"):
        return "name:" + opts["restore-target-name"]
    return "latest"


@handler("postgres backup restore")
def backup_restore(home, opts, args):
    err(PG_NOTICE)  # every `postgres` subcommand (flyctl.md §9)
    nargs(args, 1)
    dest = args[0]
    name = app_name(opts)
    st = S.load(home)
    app, leader = _flex_cluster(st, name)
    if not _enabled(app):
        raise not_enabled(name)
    # `echo $S3_ARCHIVE_CONFIG` on the leader (flapsClient.Exec)
    if not machine_env(app, leader).get(BARMAN_SECRET):
        raise FlyError("S3_ARCHIVE_CONFIG is unset")
    at = _restore_target(opts)  # a malformed time is flyctl's to pass on: the machine's restore fails on it
    image = opts.get("image-ref") or leader["config"].get("image") or app.get("image") or "flyio/postgres-flex:16.8"
    region = leader["region"]
    vol_size = ((leader["config"].get("mounts") or [{}])[0]).get("size_gb") or 1
    org = app["org"]
    # flypg.LaunchMachinesPostgres(ctx, input, false): detach is always false here, and runBackupRestore
    # ignores its returned error: every failure below prints what flyctl printed so far and exits 0.
    out("Creating app...")
    password = _pw(15)
    with S.mutate(home) as st:
        if dest in st["apps"]:
            return 0  # createApp failed ("Name has already been taken"); the error is discarded
        new = S.new_app(dest, org, role="postgres_cluster")
        st["apps"][dest] = new
        new["secrets"] = {k: S.secret_record(v) for k, v in {
            "OPERATOR_PASSWORD": password, "SU_PASSWORD": _pw(), "REPL_PASSWORD": _pw(),
            "S3_ARCHIVE_REMOTE_RESTORE_CONFIG": machine_env(app, leader)[BARMAN_SECRET] + _query(opts)}.items()}
        new["_pitr"] = {"source": name, "at": at}
        version = bump_secrets_version(new)
    flyconfig.set_minvers(dest, version)
    out(f"Setting secrets on app {dest}...")
    out(f"Provisioning 1 of 1 machines with image {image}")
    with S.mutate(home) as st:
        new = st["apps"][dest]
        rel = M.new_release(new, image=image, reason="deploy", description="Deploy image", status="complete")
        cfg = {"app": dest, "primary_region": region, "env": {"PRIMARY_REGION": region},
               "mounts": [{"source": "pg_data", "destination": "/data"}]}
        v = M.new_volume(new, name="pg_data", region=region, size=vol_size)
        conf = M.machine_config(cfg, "app", image=image, release=rel, region=region)
        conf["guest"] = dict(leader["config"].get("guest") or conf.get("guest") or {})
        conf["mounts"] = [{"volume": v["id"], "path": "/data", "name": "pg_data", "size_gb": vol_size, "encrypted": True}]
        conf["metadata"]["fly-managed-postgres"] = "true"
        m = M.make_machine(new, config=conf, region=region, check_names=["pg", "role", "vm"],
                           secrets=M.secrets_snapshot(new), healthy=health_ok(dest))
        v["attached_machine_id"] = m["id"]
        new.update(status="deployed", deployed=True, config=cfg, image=image)
        new["pg"] = {"password": password, "flycast": None, "users": ["postgres", "flypgadmin", "repmgr"],
                     "databases": ["postgres"]}
        mid = m["id"]
    out("Waiting for machine to start...")
    out(f"Machine {mid} is started")
    out("==> Monitoring health checks")
    ok = run_hook(home, ["restore", "--product", "flex", "--source", name, "--target", dest, "--at", at])
    record_event(home, {"type": "postgres_backup_restore", "app": name, "target": dest, "at": at, "ok": ok})
    if not ok or not health_ok(dest):
        # the machine's restore failed: its checks stay critical until watch.MachinesChecks gives up
        with S.mutate(home) as st:
            for mm in st["apps"][dest]["machines"]:
                M.set_checks(mm, ["pg", "role", "vm"], False)
        return 0
    out()
    out(f"Postgres cluster {dest} created")
    out("  Username:    postgres")
    out(f"  Password:    {password}")
    out(f"  Hostname:    {dest}.internal")
    out("  Proxy port:  5432")
    out("  Postgres port:  5433")
    out(f"  Connection string: postgres://postgres:{password}@{dest}.internal:5432")
    out()
    out("Save your credentials in a secure place -- you won't be able to see them again!")
    return 0


def _query(opts: dict) -> str:
    """resolveRestoreTarget's query string on the restore secret."""
    if opts.get("restore-target-time"):
        q = f"?targetTime={opts['restore-target-time']}"
    elif opts.get("restore-target-name"):
        q = f"?targetName={opts['restore-target-name']}"
    else:
        return ""
    if opts.get("restore-target-inclusive", True):
        q += "&targetInclusive=true"
    return q


def run_hook(home, argv: list[str]) -> bool:
    """Run $FAKEFLY_PITR_HOOK (no hook: nothing to restore, the restore "works" with no data).
    An interrupt reaches the hook too (same process group); wait for it to clean up."""
    hook = os.environ.get(HOOK_ENV)
    if not hook:
        return True
    proc = subprocess.Popen([hook, *argv, "--home", str(home)], stdout=sys.stderr, stderr=sys.stderr)
    try:
        return proc.wait() == 0
    except KeyboardInterrupt:
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
        raise


def on_destroy(home, app: dict) -> None:
    """`apps destroy` of an app a restore made: the hook removes its server."""
    if app.get("_pitr") is not None:
        run_hook(home, ["destroy", "--product", "flex", "--target", app["name"]])
