"""Point-in-time backups of an unmanaged (flex) Fly Postgres: flyctl argv, parsers, `FlexBackups`.

What flyctl v0.4.87 does (internal/command/postgres/backup.go, flypg/launcher.go, flypg/tigris.go)
and what the image's `flexctl` prints (fly-apps/postgres-flex cmd/flexctl/backups.go,
internal/flypg/barman*.go):

* backups are "enabled" when the app has the secret `S3_ARCHIVE_CONFIG` (isBackupEnabled); every
  other subcommand otherwise fails with ``backups are not enabled. Run `fly pg backup enable -a X`
  to enable them``. `backup enable` creates the Tigris bucket, sets that secret *staged* and says
  ``Run `fly secrets deploy -a X` to restart the cluster``; `postgres create --enable-backups` does
  the same for a new cluster. Both need a VM with at least 512 MB (hasRequiredMemoryForBackup).
* `backup list` has no `--json`: flyctl runs `flexctl backup list` on a machine (ExecOnMachine)
  and prints its tablewriter table, columns ID/Name, Alias, Status, End time (barman's
  "Mon Jan 2 15:04:05 2006", UTC on Fly), Begin WAL; or "No backups found". ExecOnMachine ignores
  the remote exit status: flexctl's own errors arrive on stderr with flyctl exiting 0.
* `backup config show` prints `  ArchiveTimeout = 60s` / `RecoveryWindow = RECOVERY WINDOW OF 7
  DAYS` / `FullBackupFrequency = 24h` / `MinimumRedundancy = 3` (defaults: barman_config.go
  SetDefaults); `config update` takes `--archive-timeout` (Go duration), `--recovery-window`
  (`^\\d+[dwy]$`), `--full-backup-frequency` (Go duration, >= 1h), `--minimum-redundancy`.
* `backup restore NEW-APP [--restore-target-time RFC3339 | --restore-target-name ID]
  [--restore-target-inclusive]` always creates a new single-machine app (LaunchMachinesPostgres
  with the source's image, region and volume size, backups disabled) with new passwords, and
  prints the same credentials block as `postgres create` (`Password:` among them). flyctl
  **discards that launch's error** (runBackupRestore ignores LaunchMachinesPostgres's return):
  a failed restore exits 0 without the `Postgres cluster NEW created` line, and the app it
  created stays. So success here is that line, not the exit status, and the caller always
  destroys NEW-APP afterwards.

The restore window's latest restorable time is not in anything flyctl prints: it is read from
the source database itself, `pg_stat_archiver.last_archived_time` (the time the newest WAL
segment reached the bucket; everything committed before it can be replayed), through the same
`fly proxy` the logical backups use.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from flyops.errors import OpsError
from flyops.fly.flyctl.commands import Call
from flyops.fly.flyctl.runner import FlyRun
from flyops.fly.pitr import RestoredCluster, RestoreWindow, rfc3339
from flyops.secret import Secret
from flyops.stack.model import PG_PORT
from flyops.units import go_duration_seconds

BARMAN_SECRET = "S3_ARCHIVE_CONFIG"  # flypg/launcher.go BarmanSecretName
NOT_ENABLED = "backups are not enabled"
#: barman_config.go SetDefaults
DEFAULT_CONFIG = {"archive_timeout": "60s", "recovery_window": "7d", "full_backup_frequency": "24h"}
BARMAN_TIME = "%a %b %d %H:%M:%S %Y"  # Go's "Mon Jan 2 15:04:05 2006" (strptime takes " 2" and "02")


# -- argv builders -----------------------------------------------------------------------------


def _read(*args: str) -> Call:
    return Call(tuple(args), mutating=False)


def _write(*args: str, config: bool = False) -> Call:
    return Call(tuple(args), mutating=True, writes_fly_config=config)


def backup_enable(app: str) -> Call:
    # runBackupEnable -> appsecrets.Update (rewrites config.yml's minvers)
    return _write("postgres", "backup", "enable", "--app", app, config=True)


def flex_backup_create(app: str, *, name: str | None = None, immediate_checkpoint: bool = False) -> Call:
    args = ["postgres", "backup", "create", "--app", app]
    if name:
        args += ["--name", name]
    if immediate_checkpoint:
        args.append("--immediate-checkpoint")
    return _write(*args)


def flex_backup_list(app: str) -> Call:
    return _read("postgres", "backup", "list", "--app", app)


def backup_config_show(app: str) -> Call:
    return _read("postgres", "backup", "config", "show", "--app", app)


def backup_config_update(app: str, changes: dict[str, str]) -> Call:
    """changes: archive_timeout / recovery_window / full_backup_frequency -> value (only those given)."""
    args = ["postgres", "backup", "config", "update", "--app", app]
    for key in ("archive_timeout", "recovery_window", "full_backup_frequency"):
        if key in changes:
            args += ["--" + key.replace("_", "-"), changes[key]]
    return _write(*args)


def backup_restore(source_app: str, new_app: str, *, at: datetime | None = None, target_name: str | None = None,
                   inclusive: bool = True, image_ref: str | None = None) -> Call:
    """`fly postgres backup restore NEW --app SOURCE`. The flag's default is true; false is
    passed as `--restore-target-inclusive=false` (resolveRestoreTarget then adds no parameter
    and postgres-flex leaves PostgreSQL's own default, which is also inclusive)."""
    if at is not None and target_name:
        raise ValueError("a restore targets a time or a backup name, not both")
    args = ["postgres", "backup", "restore", new_app, "--app", source_app]
    if at is not None:
        args += ["--restore-target-time", rfc3339(at)]
    elif target_name:
        args += ["--restore-target-name", target_name]
    if (at is not None or target_name) and not inclusive:
        args.append("--restore-target-inclusive=false")
    if image_ref:
        args += ["--image-ref", image_ref]
    return _write(*args, config=True)  # LaunchMachinesPostgres -> setSecrets -> appsecrets.Update


# -- parsers -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class FlexBackup:
    id: str
    name: str
    status: str
    end_time: datetime | None
    begin_wal: str


def parse_backup_list(text: str) -> list[FlexBackup]:
    """flexctl's tablewriter table (bordered, `|` columns); "No backups found" -> []."""
    rows: list[FlexBackup] = []
    for line in (text or "").splitlines():
        line = line.strip()
        if not line.startswith("|"):
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) < 5 or cells[0].upper() == "ID/NAME":
            continue
        rows.append(FlexBackup(cells[0], cells[1], cells[2].upper(), parse_barman_time(cells[3]), cells[4]))
    return rows


def parse_barman_time(text: str) -> datetime | None:
    text = " ".join((text or "").split())
    if not text:
        return None
    try:
        return datetime.strptime(text, BARMAN_TIME).replace(tzinfo=UTC)
    except ValueError:
        return None


_CONFIG_LINE = re.compile(r"^\s*(ArchiveTimeout|RecoveryWindow|FullBackupFrequency|MinimumRedundancy)\s*=\s*(.*?)\s*$",
                          re.M)
_WINDOW = re.compile(r"^RECOVERY WINDOW OF\s+(\d+)\s+(DAYS|WEEKS|MONTHS)$", re.I)


def parse_config_show(text: str) -> dict[str, str]:
    """`backup config show` -> {archive_timeout, recovery_window, full_backup_frequency,
    minimum_redundancy}; the window back in the form `config update` takes (7d, 2w)."""
    keys = {"ArchiveTimeout": "archive_timeout", "RecoveryWindow": "recovery_window",
            "FullBackupFrequency": "full_backup_frequency", "MinimumRedundancy": "minimum_redundancy"}
    out: dict[str, str] = {}
    for m in _CONFIG_LINE.finditer(text or ""):
        value = m.group(2)
        if m.group(1) == "RecoveryWindow":
            w = _WINDOW.match(value)
            value = (w.group(1) + {"DAYS": "d", "WEEKS": "w", "MONTHS": "m"}[w.group(2).upper()]) if w else value
        out[keys[m.group(1)]] = value
    return out


def same_config(a: str, b: str, key: str) -> bool:
    """"1h0m0s" and "60m" are the same full-backup frequency; the window compares as text."""
    if key == "recovery_window":
        return a.strip().lower() == b.strip().lower()
    try:
        return go_duration_seconds(a) == go_duration_seconds(b)
    except ValueError:
        return a == b


def config_changes(wanted: dict[str, str], live: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in wanted.items() if not (k in live and same_config(live[k], v, k))}


_CREATED = re.compile(r"^Postgres cluster (\S+) created\s*$", re.M)
_PASSWORD = re.compile(r"^\s*Password:\s*(\S+)\s*$", re.M)


def parse_restore_output(stdout: str, new_app: str) -> Secret | None:
    """The new cluster's postgres password, or None when flyctl did not get to `created`."""
    m = _CREATED.search(stdout or "")
    if not m or m.group(1) != new_app:
        return None
    pw = _PASSWORD.search(stdout[m.end():]) or _PASSWORD.search(stdout)
    return Secret(pw.group(1)) if pw else None


# -- the stack's wish, and what is live ------------------------------------------------------


def wanted_config(database: Any) -> dict[str, str]:
    """The stack's `database.pitr_*` keys as `backup config update` values."""
    return {"archive_timeout": database.pitr_archive_timeout, "recovery_window": database.pitr_recovery_window,
            "full_backup_frequency": database.pitr_full_backup_frequency}


@dataclass
class LiveBackups:
    """What Fly has: the secret (enabled), whether its machines run with it yet (`flexctl` sees
    the env var only after a restart), and the config flexctl reports."""

    enabled: bool = False
    active: bool = False
    config: dict[str, str] = field(default_factory=dict)
    note: str = ""


def read_flex_backups(run: Callable[[Call], Any], db_app: str, secrets: list[dict[str, Any]]) -> LiveBackups:
    """`secrets` is `fly secrets list --json` of the cluster (names and status only)."""
    live = LiveBackups(enabled=any(s.get("name", s.get("Name")) == BARMAN_SECRET for s in secrets))
    if not live.enabled:
        return live
    staged = any(s.get("name", s.get("Name")) == BARMAN_SECRET and str(s.get("status", s.get("Status", ""))).lower()
                 == "staged" for s in secrets)
    try:
        r = run(backup_config_show(db_app))
    except OpsError as e:
        live.note = e.message
        return live
    live.config = parse_config_show(r.stdout)
    live.active = bool(live.config) and not staged and NOT_ENABLED not in (r.stderr or "")
    if not live.active:
        live.note = "S3_ARCHIVE_CONFIG is set but the cluster's machines do not run with it yet"
    return live


@dataclass(frozen=True)
class BackupStep:
    action: str  # enable | deploy | update | keep
    detail: str
    calls: tuple[Call, ...]


def plan_flex_backups(db_app: str, database: Any, live: LiveBackups | None, *, creating: bool) -> list[BackupStep]:
    """Pure: what `up` does for `database.pitr = true`. A cluster being created gets
    `--enable-backups` on `postgres create` (then only the config); an existing one
    `backup enable` + `secrets deploy` (the secret reaches the machines on restart), then
    `backup config update` for the keys that differ."""
    if not getattr(database, "pitr", False):
        return []
    wanted = wanted_config(database)
    steps: list[BackupStep] = []
    from flyops.fly.flyctl import commands as fly

    if creating:
        changes = config_changes(wanted, DEFAULT_CONFIG)
    elif live is None or not live.enabled:
        steps.append(BackupStep("enable", "fly postgres backup enable (Tigris bucket, secret S3_ARCHIVE_CONFIG), "
                                "then fly secrets deploy (restarts the cluster)",
                                (backup_enable(db_app), fly.secrets_deploy(db_app))))
        changes = config_changes(wanted, DEFAULT_CONFIG)
    elif not live.active:
        steps.append(BackupStep("deploy", "S3_ARCHIVE_CONFIG is staged: fly secrets deploy (restarts the cluster)",
                                (fly.secrets_deploy(db_app),)))
        changes = config_changes(wanted, live.config or DEFAULT_CONFIG)
    else:
        changes = config_changes(wanted, live.config)
    if changes:
        have = live.config if live and live.config else DEFAULT_CONFIG
        steps.append(BackupStep("change", ", ".join(f"{k} {have.get(k, '?')} -> {v}" for k, v in changes.items()),
                                (backup_config_update(db_app, changes),)))
    if not steps:
        steps.append(BackupStep("keep", "WAL archiving on, " + ", ".join(f"{k} {v}" for k, v in wanted.items()), ()))
    return steps


# -- FlexBackups: the PlatformBackups of a flex cluster --------------------------------------



class FlexBackups:
    """`PlatformBackups` (flyops/fly/pitr.py) for an unmanaged flex cluster.

    run: the one flyctl runner's `run`; spawn: its `start_proxy` (returns a proxy with
    `.stop()` once `fly proxy` is ready); source_url: a context manager factory giving the
    source database's URL (for `pg_stat_archiver`), or None; mask: adds a Secret to the
    runner's masks (the restored cluster's password)."""

    product = "flex"

    @property
    def cluster(self) -> str:
        return self.app

    def __init__(self, *, app: str, run: FlyRun, spawn: Callable[[Call], Any],
                 source_url: Callable[[], AbstractContextManager[Secret]] | None = None,
                 mask: Callable[[list[Secret]], None] | None = None, inclusive: bool = True) -> None:
        self.app, self.run, self.spawn = app, run, spawn
        self.source_url, self.mask, self.inclusive = source_url, mask, inclusive
        self._passwords: dict[str, Secret] = {}
        self.backups: list[FlexBackup] = []
        self.archiver: dict[str, Any] = {}

    def list(self) -> list[FlexBackup]:
        r = self.run(flex_backup_list(self.app))
        if NOT_ENABLED in (r.stderr or "") and not parse_backup_list(r.stdout):
            raise OpsError(f"Fly's point-in-time backups of {self.app} are not active: "
                           f"{' '.join(r.stderr.split())[:300]}",
                           fix=f"inv up --env <env> (database.pitr = true), or fly secrets deploy -a {self.app}")
        self.backups = parse_backup_list(r.stdout)
        return self.backups

    def window(self) -> RestoreWindow:
        done = [b for b in self.list() if b.status == "DONE" and b.end_time is not None]
        earliest = min((b.end_time for b in done), default=None)
        last_full = max((b.end_time for b in done), default=None)
        latest = None
        if self.source_url is not None and done:
            self.archiver = read_archiver(self.source_url)
            latest = self.archiver.get("last_archived_time")
            if latest is not None and last_full is not None and latest < last_full:
                latest = last_full  # the base backup's own end is restorable even before the next segment
        return RestoreWindow(product=self.product, cluster=self.app, earliest=earliest, latest=latest,
                             last_full=last_full)

    def restore(self, *, at: datetime | None, new_name: str) -> RestoredCluster:
        # postgres-flex keeps whole seconds of the target (barman.go formatTimestamp): ask for those
        at = at.replace(microsecond=0) if at is not None else None
        r = self.run(backup_restore(self.app, new_name, at=at, inclusive=self.inclusive))
        if getattr(r, "dry", False):
            return RestoredCluster(self.product, new_name, at)
        password = parse_restore_output(r.stdout, new_name)
        if password is None:
            err = [ln for ln in (r.stderr or "").splitlines() if ln.strip() and not ln.startswith("WARNING: Unmanaged")]
            said = _PASSWORD.sub("  Password:    ********", r.stdout or "")  # never in an error
            tail = " ".join(" ".join(err).split())[-1200:] or " ".join(said.split())[-200:]
            raise OpsError(f"`fly postgres backup restore {new_name}` returned without creating the cluster "
                           f"(flyctl ignores the new cluster's launch error: backup.go runBackupRestore): {tail}",
                           fix=f"fly logs -a {new_name}; the app is destroyed afterwards")
        if self.mask:
            self.mask([password])
        self._passwords[new_name] = password
        return RestoredCluster(self.product, new_name, at)

    @contextlib.contextmanager
    def connect(self, restored: RestoredCluster) -> Iterator[Secret]:
        from flyops.fly.flyctl import commands as fly
        from flyops.procs import free_port

        password = self._passwords.get(restored.name)
        if password is None:
            raise OpsError(f"the password of {restored.name} is not known here (flyctl prints it once, on restore)")
        port = free_port()
        proxy = self.spawn(fly.proxy(restored.name, port, PG_PORT))
        try:
            yield Secret(f"postgresql://postgres:{quote(password.reveal(), safe='')}@127.0.0.1:{port}/postgres")
        finally:
            proxy.stop()

    def destroy(self, restored: RestoredCluster) -> None:
        from flyops.fly.flyctl import commands as fly

        try:
            self.run(fly.apps_destroy(restored.name))
        except OpsError as e:
            if "Could not find App" not in e.message and "not found" not in e.message.lower():
                raise
        self._passwords.pop(restored.name, None)


ARCHIVER_SQL = ("SELECT archived_count, last_archived_wal, last_archived_time, failed_count, last_failed_wal, "
                "last_failed_time, current_setting('archive_mode') FROM pg_stat_archiver")


def read_archiver(source_url: Callable[[], AbstractContextManager[Secret]]) -> dict[str, Any]:
    """pg_stat_archiver of the source (PostgreSQL's monitoring-stats docs: "last_archived_time:
    Time of the most recent successful WAL archive operation")."""
    from flyops.db import pgconn

    with source_url() as url, pgconn.connect(url) as c:
        row = c.execute(ARCHIVER_SQL).fetchone()
    keys = ("archived_count", "last_archived_wal", "last_archived_time", "failed_count", "last_failed_wal",
            "last_failed_time", "archive_mode")
    return dict(zip(keys, row, strict=True))


PLAN_ACTION = {"enable": "create", "deploy": "change", "change": "change", "keep": "keep"}


def plan_rows(stack: Any, live: LiveBackups | None, *, db_exists: bool) -> list[tuple[str, str, str]]:
    """(action, target, detail) rows for `inv plan` / `inv up`: create / change / keep."""
    if stack.database.source != "fly" or not stack.database.pitr:
        return []
    db_app = stack.app_name("db")
    rows = []
    if not db_exists:
        rows.append(("create", BARMAN_SECRET, "fly postgres create --enable-backups (Tigris bucket, WAL archiving)"))
    for step in plan_flex_backups(db_app, stack.database, live, creating=not db_exists):
        if step.action == "keep" and not db_exists:
            continue
        rows.append((PLAN_ACTION[step.action], "pitr config" if step.action in ("change", "keep") else BARMAN_SECRET,
                     step.detail))
    return rows


def read_live_backups(stack: Any, runner: Any) -> LiveBackups | None:
    """The cluster's backup state, for a stack with `database.pitr` whose cluster exists."""
    from flyops.fly.flyctl import commands as fly

    db_app = stack.app_name("db")
    return read_flex_backups(runner.run, db_app, runner.json(fly.secrets_list(db_app)) or [])
