"""`dr.drill`: restore a backup onto a throwaway server, prove it, time it, tear it down.

    select     latest | random | <id>  ->  the backup and its manifest
    provision  local: a ScratchCluster  |  fly: `fly postgres create` + `fly proxy`
    restore    the same streamed restore as `db.restore` (`restore.restore_script`): `restic
               dump` to a local file that the pg_restore loaders follow as it grows, plus
               a reader that hashes it: post-data runs only when the whole stream's SHA-256
               is the manifest's; then ANALYZE. Its detail says when the fetch completed.
    verify     the restore-level checks of db.verify (exact facts + smoke SQL)
    teardown   always (try/finally), unless keep=True

Measured RTO = provision start .. verify end (time.monotonic); measured RPO = drill start -
the backup's snapshot time (its manifest `start`: the dump's MVCC snapshot is taken then).
Outcome and exit code: passed 0, verification failed 3, target missed 6 (restore worked),
interrupted 130, other failures their OpsError code. A JSON and a Markdown report are written
in every case that got past selecting the backup.

Signals: SIGINT and SIGTERM become KeyboardInterrupt while a drill runs. The long step (the
streamed restore) runs through `LocalHost.run_script`, in a session of its own that an
interrupt ends (bash, restic, pg_restore and its -j workers) instead of waiting for it; the
handler also sets a flag checked between phases, in case a caller swallowed the interrupt.
Teardown itself runs with signals deferred, so a second Ctrl-C cannot strand a server.

Processes run through `sh` only; scripts get their secrets on stdin via `flyops.db.hosts.prepare`.
"""

from __future__ import annotations

import contextlib
import json
import random
import re
import shlex
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import psycopg

from flyops.db import database, pgconn
from flyops.db.backup import parse_kv
from flyops.db.catalog import MANIFEST_FILE, find_backup, list_backups, record_verification
from flyops.db.config import DEFAULT_TOOLS, RepoConfig, Tools
from flyops.db.hosts import run_program
from flyops.db.report import default_report_base, write_reports
from flyops.db.restic import Repo
from flyops.db.restore import (
    analyze_in_parallel,
    database_error,
    manifest_restore_script,
    missing_extensions,
    new_database_name,
    phase_times,
    split_tables,
)
from flyops.db.scratch import ScratchCluster, find_pg_bindir
from flyops.db.verify import Check, VerifyResult, check_restored
from flyops.errors import (
    BadInput,
    ExitCode,
    Interrupted,
    OpsError,
    PreconditionFailed,
    TargetMissed,
    VerificationFailed,
)
from flyops.fly.flyctl import commands as fly
from flyops.fly.flyctl.commands import Call
from flyops.fly.flyctl.output import postgres_create_password
from flyops.fly.flyctl.runner import FlyRun
from flyops.procs import Signals, free_port, operator
from flyops.secret import Secret
from flyops.units import human_duration

PHASES_IN_RTO = ("provision", "restore", "verify")


# -- signals ---------------------------------------------------------------------------------


# -- targets ---------------------------------------------------------------------------------


class DrillTarget(Protocol):
    kind: str

    def provision(self, manifest: dict, work_dir: Path) -> dict: ...  # facts for the report (no secrets)

    def server_url(self) -> Secret: ...  # admin URL (database "postgres")

    def teardown(self) -> None: ...

    def kept(self) -> dict: ...  # how to reach / remove what keep=True left


class LocalTarget:
    """A ScratchCluster on this machine, preferring the backup's server major."""

    kind = "local"

    def __init__(self, *, major: int | None = None, base_dir: Path | str | None = None) -> None:
        self._major = major
        # not the drill's work folder: the server runs as an unprivileged user, who must be able
        # to reach its folder, and a caller's work folder (e.g. under a 0700 home) may not allow that
        self._base_dir = str(base_dir) if base_dir else None
        self.cluster: ScratchCluster | None = None

    def provision(self, manifest: dict, work_dir: Path) -> dict:
        major = self._major or (int(manifest.get("server_version_num") or 0) // 10000) or None
        try:
            bindir = find_pg_bindir(major)
        except PreconditionFailed:
            bindir = find_pg_bindir(None)  # newest installed; the version check below decides
        self.cluster = ScratchCluster(bindir=bindir, base_dir=self._base_dir)
        self.cluster.start()
        return {"target": f"scratch cluster on {self.cluster.host}:{self.cluster.port} ({bindir})",
                "host": self.cluster.host, "port": self.cluster.port, "dir": str(self.cluster.dir),
                "server_version_num": self.cluster.server_version_num()}

    def server_url(self) -> Secret:
        assert self.cluster is not None
        return self.cluster.url("postgres")

    def teardown(self) -> None:
        if self.cluster is not None:
            self.cluster.stop()

    def kept(self) -> dict:
        c = self.cluster
        if c is None or c.dir is None:
            return {}
        return {"data_dir": str(c.datadir), "socket_dir": str(c.socket_dir), "port": c.port,
                "connect": shlex.join(["psql", "-h", str(c.socket_dir), "-p", str(c.port), "-U", "postgres"]),
                "remove": shlex.join(["pg_ctl", "-D", str(c.datadir), "-m", "immediate", "stop"])
                          + " && " + shlex.join(["rm", "-rf", str(c.dir)])}


# Fly target ---------------------------------------------------------------------------------


def fly_drill_app_name(project: str, env: str, now: datetime | None = None) -> str:
    """<project>-drill-<env>-<yymmddhhmm>: unique per run, <= 63 chars, lower case."""
    now = now or datetime.now(UTC)
    name = f"{project}-drill-{env}-{now.strftime('%y%m%d%H%M')}".lower()
    return re.sub(r"[^a-z0-9-]", "-", name)[:63].strip("-")


def parse_postgres_create_password(output: str) -> Secret:
    """The generated superuser password from `fly postgres create` output (as a Secret)."""
    found = postgres_create_password(output)
    if found is None:
        raise OpsError("fly postgres create printed no 'Password:' line; cannot reach the drill cluster",
                       fix="check flyctl's output format (flyctl.md §9) and that the runner returns stdout")
    return found




class FlyProxy(Protocol):
    def stop(self) -> None: ...


FlySpawn = Callable[[Call], FlyProxy]  # start `fly proxy ...` (FlyRunner.start_proxy), return once ready


class FlyTarget:
    """A temporary Fly Postgres app, reached through `fly proxy` on a free local port.

    `run` and `spawn` are injected: the task layer wires them to the one flyctl runner (which
    must not echo `postgres create` output: it contains the generated password).
    """

    kind = "fly"

    def __init__(self, *, app: str, org: str, region: str, run: FlyRun, spawn: FlySpawn,
                 vm_size: str = "shared-cpu-1x", volume_size_gb: int = 1, image_ref: str | None = None) -> None:
        self.app, self.org, self.region = app, org, region
        self.run, self.spawn = run, spawn
        self.vm_size, self.volume_size_gb, self.image_ref = vm_size, volume_size_gb, image_ref
        self.created = False
        self.proxy: FlyProxy | None = None
        self.port: int | None = None
        self._password: Secret | None = None

    def provision(self, manifest: dict, work_dir: Path) -> dict:  # noqa: ARG002
        self.created = True  # from the first call on, teardown destroys the app (a no-op if absent)
        out = self.run(fly.postgres_create(self.app, self.org, self.region, cluster_size=1, vm_size=self.vm_size,
                                           volume_size_gb=self.volume_size_gb, image_ref=self.image_ref))
        self._password = parse_postgres_create_password(out)
        self.port = free_port()
        self.proxy = self.spawn(fly.proxy(self.app, self.port, 5432))
        return {"target": f"Fly Postgres app {self.app} ({self.region}) via fly proxy on 127.0.0.1:{self.port}",
                "app": self.app, "region": self.region, "port": self.port}

    def server_url(self) -> Secret:
        assert self._password is not None and self.port is not None
        from urllib.parse import quote

        return Secret(f"postgresql://postgres:{quote(self._password.reveal(), safe='')}@127.0.0.1:{self.port}/postgres")

    def teardown(self) -> None:
        try:
            if self.proxy is not None:
                self.proxy.stop()
                self.proxy = None
        finally:
            if self.created:
                self.run(fly.apps_destroy(self.app))
                self.created = False

    def kept(self) -> dict:
        return {"app": self.app, "remove": shlex.join(["fly", *fly.apps_destroy(self.app).args])} if self.created else {}


# -- the drill ---------------------------------------------------------------------------------


@dataclass
class Phase:
    name: str
    seconds: float = 0.0
    ok: bool = False
    detail: str = ""

    def to_dict(self) -> dict:
        return {"name": self.name, "seconds": round(self.seconds, 4), "ok": self.ok, "detail": self.detail}


class DrillVerdict:
    """What a drill's result decides from its fields, the same for the logical drill and the
    point-in-time one (flyops.db.pitr_drill): targets met, outcome, exit code, the error raised.
    Needs rto_/rpo_target and _measured, verification, error, error_code, interrupted, phases,
    reports and summary()."""

    interrupted_text = "drill interrupted; everything it started was torn down."

    @property
    def rto_met(self) -> bool | None:
        if self.rto_target is None or self.rto_measured is None:
            return None
        return self.rto_measured <= self.rto_target

    @property
    def rpo_met(self) -> bool | None:
        if self.rpo_target is None or self.rpo_measured is None:
            return None
        return self.rpo_measured <= self.rpo_target

    @property
    def restore_ok(self) -> bool:
        return self.verification is not None and self.verification.ok and self.error is None

    @property
    def outcome(self) -> str:
        if self.interrupted:
            return "interrupted"
        if not self.restore_ok:
            return "failed"
        if self.rto_met is False or self.rpo_met is False:
            return "target_missed"
        return "passed"

    @property
    def exit_code(self) -> ExitCode:
        fixed = {"interrupted": ExitCode.INTERRUPTED, "target_missed": ExitCode.TARGET_MISSED, "passed": ExitCode.OK}
        if self.outcome in fixed:
            return fixed[self.outcome]
        return self.error_code if self.error_code is not None else ExitCode.VERIFY_FAILED

    def verdict_dict(self) -> dict:
        """The JSON fields both drills report the same way: phases, RTO and RPO against their
        targets, the verification, the outcome, its exit code and the error."""
        return {
            "phases": [p.to_dict() for p in self.phases],
            "rto": {"measured_s": _round(self.rto_measured), "target_s": self.rto_target, "met": self.rto_met},
            "rpo": {"measured_s": _round(self.rpo_measured), "target_s": self.rpo_target, "met": self.rpo_met},
            "verification": self.verification.to_dict() if self.verification else {},
            "outcome": self.outcome,
            "exit_code": int(self.exit_code),
            "error": self.error,
        }

    def raise_for_outcome(self) -> None:
        """The task's exit: nothing when passed, else the OpsError with the documented code."""
        outcome, where = self.outcome, (" Reports: " + ", ".join(self.reports)) if self.reports else ""
        if outcome == "passed":
            return
        if outcome == "interrupted":
            raise Interrupted(f"{self.interrupted_text}{where}")
        if outcome == "target_missed":
            missed = [n for n, m in (("RTO", self.rto_met), ("RPO", self.rpo_met)) if m is False]
            raise TargetMissed(f"{self.summary()}: restore verified but {' and '.join(missed)} missed.{where}",
                               fix="see the phase timings in the report; raise --rto/--rpo or speed up that phase")
        if self.verification is not None and not self.verification.ok and self.error is None:
            failed = "; ".join(f"{c.name}: {c.detail}" for c in self.verification.failures())
            raise VerificationFailed(f"{self.summary()}: {failed}.{where}")
        raise OpsError(f"{self.summary()}: {self.error}.{where}", code=self.exit_code)


@dataclass
class DrillResult(DrillVerdict):
    env: str
    target: str
    started_at: datetime
    operator: str
    selection: str
    rto_target: float | None = None
    rpo_target: float | None = None
    finished_at: datetime | None = None
    backup: dict = field(default_factory=dict)
    fetched: dict = field(default_factory=dict)
    restored: dict = field(default_factory=dict)
    phases: list[Phase] = field(default_factory=list)
    verification: VerifyResult | None = None
    rto_measured: float | None = None
    rpo_measured: float | None = None
    error: str | None = None
    error_code: ExitCode | None = None
    interrupted: bool = False
    kept: dict = field(default_factory=dict)
    tools: dict = field(default_factory=dict)
    reports: list[str] = field(default_factory=list)
    recorded: str | None = None

    def summary(self) -> str:
        parts = [f"drill {self.outcome}"]
        if self.backup.get("id"):
            parts.append(f"backup {self.backup['id']}")
        if self.rto_measured is not None:
            t = f", target {human_duration(self.rto_target)}" if self.rto_target is not None else ""
            parts.append(f"RTO {human_duration(self.rto_measured, precision=2)}{t}")
        if self.rpo_measured is not None:
            t = f", target {human_duration(self.rpo_target)}" if self.rpo_target is not None else ""
            parts.append(f"RPO {human_duration(self.rpo_measured)}{t}")
        return ", ".join(parts)

    def to_dict(self) -> dict:
        def iso(d: datetime | None) -> str | None:
            return d.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if d else None

        return {
            "kind": "dr.drill",
            "env": self.env,
            "target": self.target,
            "operator": self.operator,
            "started_at": iso(self.started_at),
            "finished_at": iso(self.finished_at),
            "backup": {**self.backup, "selection": self.selection},
            "fetched": self.fetched,
            "restored": self.restored,
            **self.verdict_dict(),
            "kept": self.kept or False,
            "tools": self.tools,
            "recorded": self.recorded,
        }


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 4)


class _Progress:
    """JSON lines in `path` (phase start/end), for a watcher or a test; optional."""

    def __init__(self, path: Path | None, on_line: Any = None) -> None:
        self.path = Path(path) if path else None
        self.on_line = on_line  # a flyops.progress.ProgressLine (a terminal's status line), or None

    def __call__(self, **event: Any) -> None:
        if self.on_line is not None and event.get("event") == "start" and event.get("phase"):
            from flyops.progress import MARK

            self.on_line(f"{MARK}phase={event['phase']}")
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"t": datetime.now(UTC).isoformat(), **event}, default=str) + "\n")


def select_backup(repo: Repo, env: str, selection: str, rng: random.Random | None = None) -> tuple[dict, dict]:
    """(dump snapshot, manifest) for latest | random | <id>."""
    if selection == "random":
        rows = list_backups(repo.config, env, host=repo.host, tools=repo.tools)
        if not rows:
            raise BadInput(f"there is no complete backup of {env} in {repo.location}")
        selection = (rng or random.SystemRandom()).choice(rows)["id"]
    dump_snap, man_snap = find_backup(repo, env, selection)
    return dump_snap, repo.read_json(man_snap["id"], MANIFEST_FILE)


def _parse_time(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def run_drill(*, env: str, repo_config: RepoConfig, backup: str = "latest", target: DrillTarget | None = None,
              rto: float | None = None, rpo: float | None = None, smoke_queries: Sequence[str] = (),
              jobs: int = 2, keep: bool = False, report_base: Path | str | None = None, root: Path | str = ".",
              tools: Tools = DEFAULT_TOOLS, work_dir: Path | str | None = None, progress_file: Path | None = None,
              record: bool = True, rng: random.Random | None = None, on_progress: Any = None) -> DrillResult:
    """Run one restore drill and write its reports; returns the DrillResult (never raises for
    the outcome: call `result.raise_for_outcome()` for the task's exit code).

    target: LocalTarget() (default) or a FlyTarget. report_base: where `<base>.json/.md` go;
    default `<root>/var/drills/<env>/<timestamp>`. work_dir: parent of the drill's temp
    folder (the fetched dump); default the system temp dir. The local scratch cluster lives
    in its own temp folder (see LocalTarget).
    """
    if backup not in ("latest", "random") and not re.match(r"^\d{8}T\d{4,6}Z-[a-z-]+-[0-9a-f]{4}$", backup or ""):
        raise BadInput(f"--backup {backup!r}: expected latest, random or a backup id", fix="see `inv db.list`")
    for name, value in (("rto", rto), ("rpo", rpo)):
        if value is not None and value <= 0:
            raise BadInput(f"--{name} must be a positive duration")
    target = target or LocalTarget()
    progress = _Progress(progress_file, on_progress)  # on_progress: phases and the restore's bytes, for a terminal
    started = datetime.now(UTC)
    result = DrillResult(env=env, target=target.kind, started_at=started, operator=operator(), selection=backup,
                         rto_target=rto, rpo_target=rpo)
    repo = Repo(repo_config, _local_host(), tools)
    repo.host.progress = on_progress
    base = Path(report_base) if report_base else default_report_base(Path(root), env, started)

    work: Path | None = None
    provisioned = False
    with Signals() as signals:
        try:
            try:
                progress(event="start", phase="select")
                dump_snap, manifest = select_backup(repo, env, backup, rng)
                result.backup = _backup_facts(manifest)
                result.rpo_measured = (started - _parse_time(manifest["start"])).total_seconds()
                signals.check()

                work = Path(tempfile.mkdtemp(prefix="flyops-drill-", dir=str(work_dir) if work_dir else None))
                t_rto = time.monotonic()

                with timed_phase(result, "provision", progress, signals) as ph:
                    provisioned = True
                    facts = target.provision(manifest, work)
                    ph.detail = facts.get("target", "")
                    progress(event="provisioned", **{k: v for k, v in facts.items() if k in ("port", "dir", "app")})
                    server_url = target.server_url()
                    db = _prepare_database(server_url, manifest, facts)
                    result.restored = {"target": facts.get("target"), "database": db,
                                       "roles_created": facts.get("roles_created", [])}
                db_url = pgconn.with_dbname(server_url, db)

                with timed_phase(result, "restore", progress, signals) as ph:
                    script = manifest_restore_script(repo, dump_snap["id"], manifest, tools, db_url, jobs,
                                                     expected_sha256=manifest["sha256"])
                    r = repo.host.run_script(f"export TMPDIR={shlex.quote(str(work))}\n" + script,
                                             {**repo_config.secrets(), **pgconn.libpq_secrets(server_url)})
                    signals.check()
                    out = parse_kv(r.stdout)
                    result.fetched = {"sha256": out.get("sha256"), "bytes": int(out.get("bytes") or 0)}
                    tail = " ".join(r.stderr.split())[-600:]
                    if out.get("rc_fetch") not in ("0", "143"):  # 143: stopped by us after a loader failed
                        raise OpsError(f"restic dump of {manifest['id']} failed (exit {out.get('rc_fetch')}): "
                                       f"{tail}", code=ExitCode.VERIFY_FAILED)
                    if out.get("rc_fetch") == "0" and out.get("sha256") != manifest["sha256"]:
                        raise VerificationFailed(f"fetched dump SHA-256 {out.get('sha256')} does not match the "
                                                 f"manifest's {manifest['sha256']}")
                    if out.get("rc_restore") != "0":
                        raise OpsError(f"pg_restore failed (exit {out.get('rc_restore')}): {tail}",
                                       code=ExitCode.VERIFY_FAILED)
                    analyze_in_parallel(db_url, jobs)  # as db.restore does: the drill times the real procedure
                    with pgconn.connect(server_url) as admin:
                        database.finish_database(admin, db, manifest.get("database_properties"))
                    t = phase_times(out)
                    n = 1 + sum(1 for lst in split_tables(manifest.get("tables", {}), jobs)[1:] if lst)
                    ph.detail = (f"streamed: {result.fetched['bytes']} bytes fetched by {t.get('fetched', 0):.1f} s, "
                                 f"SHA-256 matches the manifest; data loaded by {t.get('data', 0):.1f} s "
                                 f"({n} loader{'s' if n > 1 else ''}); indexes and constraints by "
                                 f"{t.get('post', 0):.1f} s (pg_restore --exit-on-error, owners and grants kept, "
                                 f"post-data -j {jobs}); then ANALYZE and the database's settings and ACL")

                with timed_phase(result, "verify", progress, signals) as ph:
                    v = VerifyResult(level="restore", env=env, backup_id=manifest["id"],
                                     started_at=started.strftime("%Y-%m-%dT%H:%M:%SZ"))
                    v.checks.append(Check("integrity", True, "fetched dump SHA-256 matches the manifest"))
                    v.checks.append(Check("restore", True, ph_restore_detail(result)))
                    result.verification = v
                    block = check_restored(v, db_url, manifest, smoke_queries)
                    result.restored.update(tables=block.get("tables"), rows=block.get("rows"),
                                           large_objects=manifest.get("large_objects"),
                                           migration_head=manifest.get("schema_migrations_head"))
                    ph.ok = v.ok
                    ph.detail = f"{sum(c.ok for c in v.checks)}/{len(v.checks)} checks passed"
                result.rto_measured = time.monotonic() - t_rto
            except KeyboardInterrupt:
                result.interrupted = True
                result.error = "interrupted by a signal"
            except (OpsError, psycopg.Error) as e:
                if isinstance(e, psycopg.Error):
                    e = database_error(e, "the drill's database work failed")  # noqa: PLW2901
                result.error = " ".join(e.message.split())
                result.error_code = e.code
                if isinstance(e, VerificationFailed) or e.code == ExitCode.VERIFY_FAILED:
                    result.verification = result.verification or _failed_verification(env, result, e)
            finally:
                with signals.defer():
                    _teardown(result, target, keep, provisioned, work, progress)
                    if signals.received is not None:
                        result.interrupted = True
                        result.error = result.error or "interrupted by a signal"
                    if record and result.backup.get("id") and not result.interrupted and \
                            result.verification is not None:
                        with contextlib.suppress(OpsError):
                            result.recorded = record_verification(
                                repo_config, env, result.backup["id"],
                                {**result.verification.to_dict(), "drill": True, "outcome": result.outcome,
                                 "rto_s": _round(result.rto_measured)},
                                host=repo.host, tools=tools)
                    result.finished_at = datetime.now(UTC)
                    result.tools = _tool_versions(tools)
                    if result.backup or result.error:
                        json_path, md_path = write_reports(result.to_dict(), base)
                        result.reports = [str(json_path), str(md_path)]
                    progress(event="done", outcome=result.outcome, exit_code=int(result.exit_code))
        except KeyboardInterrupt:  # a signal between the inner try and the deferred teardown
            result.interrupted = True
    return result


def ph_restore_detail(result: DrillResult) -> str:
    p = next((p for p in result.phases if p.name == "restore"), None)
    return p.detail if p else ""


@contextlib.contextmanager
def timed_phase(result: DrillVerdict, name: str, progress: Any, signals: Signals) -> Iterator[Phase]:
    """One phase of a drill (logical or point-in-time): timed, recorded in result.phases, failed on any exception."""
    signals.check()
    ph = Phase(name)
    result.phases.append(ph)
    progress(event="start", phase=name)
    t0 = time.monotonic()
    try:
        yield ph
        ph.ok = ph.ok or name != "verify"
    except BaseException as e:
        ph.ok = False
        ph.detail = ph.detail or (getattr(e, "message", None) or type(e).__name__)[:300]
        raise
    finally:
        ph.seconds = time.monotonic() - t0
        progress(event="end", phase=name, ok=ph.ok, seconds=ph.seconds)
    signals.check()


def _prepare_database(server_url: Secret, manifest: dict, facts: dict) -> str:
    """Preflight on the drill server, then the backup's roles the server lacks, and an empty
    `<db>_drill_<ts>_<hex>` with the recorded encoding, locale and owner and the public-schema
    extensions at their recorded versions."""
    with pgconn.connect(server_url) as admin:
        missing = missing_extensions(admin, manifest)
        if missing:
            raise PreconditionFailed(f"the drill server cannot create the backup's extensions at their versions: "
                                     f"{'; '.join(missing)}",
                                     fix="install postgresql-contrib (or the named extensions) where the drill runs")
        server_num = int(admin.execute("SHOW server_version_num").fetchone()[0])
        if server_num // 10000 < int(manifest["server_version_num"]) // 10000:
            raise PreconditionFailed(
                f"drill server {server_num // 10000} is older than the backup's {manifest['server_version_num'] // 10000}",
                fix="install that PostgreSQL major where the drill runs")
        db = new_database_name(manifest["database"], "drill")
        facts["roles_created"] = database.create_missing_roles(admin, manifest.get("roles"))
        admin.execute(database.create_database_sql(db, manifest.get("database_properties"), owner=True,
                                                   server_num=server_num))
    with pgconn.connect(pgconn.with_dbname(server_url, db)) as c:
        database.create_extensions(c, manifest)
    return db


def _teardown(result: DrillResult, target: DrillTarget, keep: bool, provisioned: bool, work: Path | None,
              progress: _Progress) -> None:
    t0 = time.monotonic()
    ph = Phase("teardown")
    progress(event="start", phase="teardown")
    errors: list[str] = []
    if keep and provisioned:
        result.kept = target.kept()
        ph.detail = "kept (--keep): " + ", ".join(f"{k}={v}" for k, v in result.kept.items() if k != "connect")
    else:
        if provisioned:
            try:
                target.teardown()
            except Exception as e:  # noqa: BLE001 - report it, keep tearing down the rest
                errors.append(f"target: {' '.join(str(e).split())[:300]}")
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)
            if work.exists():
                errors.append(f"could not remove {work}")
        if errors:
            ph.detail = "; ".join(errors)
        else:
            ph.detail = "server removed, temp folder removed" if provisioned else "temp folder removed"
    ph.ok = not errors
    ph.seconds = time.monotonic() - t0
    if provisioned or work is not None:
        result.phases.append(ph)
    progress(event="end", phase="teardown", ok=ph.ok, seconds=ph.seconds)
    if errors and result.error is None:
        result.error = "teardown incomplete: " + "; ".join(errors)
        result.error_code = ExitCode.FAILURE


def _failed_verification(env: str, result: DrillResult, e: OpsError) -> VerifyResult:
    v = VerifyResult(level="restore", env=env, backup_id=result.backup.get("id"))
    name = "integrity" if "SHA-256" in e.message or "restic dump" in e.message else "restore"
    v.checks.append(Check(name, False, " ".join(e.message.split())[:600]))
    return v


def _backup_facts(m: dict) -> dict:
    return {"id": m.get("id"), "snapshot_time": m.get("start"), "kind": m.get("kind"), "database": m.get("database"),
            "server_version": m.get("server_version"), "pg_dump_version": m.get("pg_dump_version"),
            "dump_bytes": m.get("bytes"), "sha256": m.get("sha256"), "taken_by": m.get("who")}


def _tool_versions(tools: Tools) -> dict:
    out = {}
    for name, binary in (("pg_restore", tools.pg_restore), ("restic", tools.restic)):
        with contextlib.suppress(Exception):
            text = run_program([binary, "version" if name == "restic" else "--version"]).stdout.strip()
            m = re.search(r"(\d+\.\d+(?:\.\d+)?)", text)
            out[name] = m.group(1) if m else text[:40]
    return out


def _local_host():
    from flyops.db.hosts import LocalHost

    return LocalHost()
