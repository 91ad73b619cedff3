"""`dr.drill --layer pitr`: restore the platform's point-in-time backup into a new cluster, prove it,
time it, tear it down. Written against `flyops.fly.pitr.PlatformBackups`, so flex
(`flyops.fly.pgbackup.FlexBackups`) and Managed Postgres plug in alike.

    window    PlatformBackups.window(): earliest / latest restorable, last full backup; the
              requested time must lie inside it (else exit 5, nothing created)
    restore   PlatformBackups.restore(at=T, new_name=...) -- RTO starts here (the request)
    verify    PlatformBackups.connect(): the restored database against the logical backups that
              bracket T (the newest logical backup taken at or before T, and the first after it):
              every table's row count between the two (equal to the first when nothing was
              written in between), and the schema_migrations head, extensions, large objects,
              owners and grants, database settings those backups recorded equal to either
              backup's (a migration between them changes them from one to the other).
              RTO ends when this is done.
    teardown  PlatformBackups.destroy(), always: errors, Ctrl-C and SIGTERM included (the
              logical drill's `Signals`: a signal becomes KeyboardInterrupt, the teardown runs
              with signals deferred).

RPO = T - the newest transaction the restored database contains. PostgreSQL keeps a commit's
time only in its WAL commit record; after recovery it can be read back

  1. with `track_commit_timestamp = on` (PostgreSQL docs, runtime-config-replication: "Record
     commit time of transactions"): `pg_xact_commit_timestamp(xid)` of the newest xids below
     `pg_current_snapshot()`'s xmax, read from pg_commit_ts on disk, so it survives the restart
     postgres-flex does after recovery (barman_restore.go walReplayAndReset).
     `pg_last_committed_xact()` is not used: it lives in shared memory and is NULL after any
     restart (checked on PostgreSQL 15);
  2. else `pg_last_xact_replay_timestamp()` (docs, functions-admin: "the time at which the
     commit or abort WAL record for that transaction was generated on the primary ... if
     recovery has completed, this will remain static"): exact, but also shared memory, so NULL
     once the restored server has restarted;
  3. else not measured: the report says so and how to enable (1).

Commits the platform makes after promotion (postgres-flex resets its users) are newer than the
request, so only commit times at or before min(T, request time) count.
"""

from __future__ import annotations

import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

from flyops.db import pgconn
from flyops.db.drill import DrillVerdict, Phase, timed_phase
from flyops.db.manifest import compare_facts, database_facts
from flyops.db.report import default_report_base, write_reports
from flyops.db.verify import Check, VerifyResult
from flyops.errors import (
    BadInput,
    ExitCode,
    OpsError,
    PreconditionFailed,
)
from flyops.fly.pitr import PlatformBackups, RestoredCluster, RestoreWindow
from flyops.procs import Signals, operator
from flyops.secret import Secret
from flyops.units import human_duration, parse_duration

_REL = re.compile(r"^-\s*(\S+)$")


def parse_at(text: str | None, now: datetime | None = None) -> datetime | None:
    """--at: None / "latest" -> None; "-15m" -> now - 15 minutes; else an RFC 3339 time (UTC if no zone)."""
    if text is None or text == "latest":
        return None
    now = now or datetime.now(UTC)
    m = _REL.match(text.strip())
    if m:
        try:
            return now - timedelta(seconds=parse_duration(m.group(1)))
        except ValueError as exc:
            raise BadInput(f"--at {text!r}: {exc}", fix="e.g. --at -15m or --at 2026-08-21T02:00:00Z") from None
    try:
        at = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise BadInput(f"--at {text!r}: not a time", fix="e.g. --at -15m or --at 2026-08-21T02:00:00Z") from None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def _iso(d: datetime | None) -> str | None:
    if d is None:
        return None
    d = d.astimezone(UTC)
    return d.strftime("%Y-%m-%dT%H:%M:%S") + (f".{d.microsecond:06d}"[:4] if d.microsecond else "") + "Z"


@dataclass
class PitrDrillResult(DrillVerdict):
    env: str
    product: str
    cluster: str
    started_at: datetime
    operator: str
    selection: str
    requested_at: datetime | None = None
    rto_target: float | None = None
    rpo_target: float | None = None
    finished_at: datetime | None = None
    window: RestoreWindow | None = None
    restored_name: str | None = None
    database: str | None = None
    compared_with: list[str] = field(default_factory=list)
    newest_commit: datetime | None = None
    rpo_source: str | None = None
    phases: list[Phase] = field(default_factory=list)
    verification: VerifyResult | None = None
    rto_measured: float | None = None
    rpo_measured: float | None = None
    error: str | None = None
    error_code: ExitCode | None = None
    interrupted: bool = False
    reports: list[str] = field(default_factory=list)

    interrupted_text = "point-in-time drill interrupted; the restored cluster was destroyed."

    def summary(self) -> str:
        parts = [f"point-in-time drill {self.outcome}", f"{self.product} {self.cluster} at {_iso(self.requested_at) or 'latest'}"]
        if self.rto_measured is not None:
            parts.append(f"RTO {human_duration(self.rto_measured, precision=2)}")
        parts.append(f"RPO {human_duration(self.rpo_measured)}" if self.rpo_measured is not None else "RPO not measured")
        return ", ".join(parts)

    def to_dict(self) -> dict:
        w = self.window
        return {
            "kind": "dr.drill",
            "layer": "pitr",
            "env": self.env,
            "target": f"{self.product} point-in-time restore into a new cluster",
            "operator": self.operator,
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
            "backup": {"id": f"{self.product} {self.cluster}", "selection": self.selection,
                       "snapshot_time": _iso(self.requested_at), "kind": "platform point-in-time",
                       "database": self.database},
            "restored": {"target": self.restored_name, "database": self.database},
            "pitr": {
                "product": self.product, "cluster": self.cluster, "requested_at": _iso(self.requested_at),
                "window": {"earliest": _iso(w.earliest), "latest": _iso(w.latest), "last_full": _iso(w.last_full)}
                if w else None,
                "restored_cluster": self.restored_name, "compared_with": self.compared_with,
                "newest_commit": _iso(self.newest_commit), "rpo_source": self.rpo_source,
            },
            **self.verdict_dict(),
            "kept": False,
        }


# -- RPO: the newest transaction in the restored database ------------------------------------

_COMMIT_TS_SQL = """
SELECT max(ts) FROM (
  SELECT pg_xact_commit_timestamp(((x %% 4294967296)::text)::xid) AS ts
  FROM generate_series(greatest(pg_snapshot_xmax(pg_current_snapshot())::text::bigint - %(scan)s, 3),
                       pg_snapshot_xmax(pg_current_snapshot())::text::bigint - 1) AS x
) t WHERE ts <= %(limit)s
"""


def newest_commit(url: Secret, limit: datetime, *, scan: int = 100_000) -> tuple[datetime | None, str]:
    """(time of the newest transaction at or before `limit`, how it was read)."""
    with pgconn.connect(url) as c:
        if c.execute("SHOW track_commit_timestamp").fetchone()[0] == "on":
            ts = c.execute(_COMMIT_TS_SQL, {"scan": scan, "limit": limit}).fetchone()[0]
            if ts is not None:
                return ts, "pg_xact_commit_timestamp (track_commit_timestamp = on)"
        ts = c.execute("SELECT pg_last_xact_replay_timestamp()").fetchone()[0]
        if ts is not None and ts <= limit:
            return ts, "pg_last_xact_replay_timestamp()"
    return None, ("not measured: the restored server has no commit times (set track_commit_timestamp = on on the "
                  "source: ALTER SYSTEM SET track_commit_timestamp = on, then restart it)")


# -- the comparison with the logical backups around T -----------------------------------------


def bracketing(manifests: list[dict], at: datetime) -> tuple[dict | None, dict | None]:
    """(newest manifest with start <= at, oldest with start > at)."""
    def when(m: dict) -> datetime:
        return datetime.strptime(m["start"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)

    before = [m for m in manifests if when(m) <= at]
    after = [m for m in manifests if when(m) > at]
    return (max(before, key=when) if before else None), (min(after, key=when) if after else None)


def compare_bracketed(actual: dict, before: dict, after: dict | None) -> list[str]:
    """Problems of a point-in-time restore against the logical backups around its time."""
    problems: list[str] = []
    b_t, a_t = before.get("tables", {}), (after or {}).get("tables")
    for t in sorted(set(b_t) | set(actual.get("tables", {})) | set(a_t or {})):
        n = actual.get("tables", {}).get(t)
        lo_hi = [x for x in (b_t.get(t), (a_t or {}).get(t) if a_t is not None else b_t.get(t)) if x is not None]
        if n is None:
            if t in b_t and (a_t is None or t in a_t):
                problems.append(f"table {t} missing (the backups have {' / '.join(map(str, lo_hi))} rows)")
            continue
        if not lo_hi:
            if a_t is None or t not in a_t:
                problems.append(f"table {t} is in neither logical backup ({n} rows)")
            continue
        lo, hi = min(lo_hi), max(lo_hi)
        if not lo <= n <= hi:
            problems.append(f"table {t}: {n} rows, the logical backups around that time have "
                            + (f"{lo}..{hi}" if lo != hi else f"{lo}"))

    def structure(m: dict) -> list[str]:
        return [p for p in compare_facts({**m, "tables": {}}, {**actual, "tables": {}})]

    s_before = structure(before)
    if s_before and (after is None or structure(after)):
        problems += s_before
    return problems


# -- the drill -------------------------------------------------------------------------------


def run_pitr_drill(*, env: str, backups: PlatformBackups, new_name: str, at: datetime | None = None,
                   selection: str = "latest", manifests: list[dict] | None = None, database: str | None = None,
                   rto: float | None = None, rpo: float | None = None, report_base: Any = None, root: Any = ".",
                   write: bool = True, now: datetime | None = None) -> PitrDrillResult:
    """One point-in-time drill; never raises for its outcome (`raise_for_outcome()` does).
    manifests: the logical backups' manifests (for the comparison), newest first or any order."""
    started = now or datetime.now(UTC)
    product, cluster = backups.product, backups.cluster
    res = PitrDrillResult(env=env, product=product, cluster=str(cluster), started_at=started, operator=operator(),
                          selection=selection, requested_at=at, rto_target=rto, rpo_target=rpo, database=database)
    restored: RestoredCluster | None = None
    asked = False
    with Signals() as signals:
        try:
            try:
                with timed_phase(res, "window", _no_progress, signals) as ph:
                    w = backups.window()
                    res.window = w
                    res.cluster = w.cluster
                    ph.detail = (f"earliest {_iso(w.earliest)}, latest {_iso(w.latest)}, last full backup "
                                 f"{_iso(w.last_full)}")
                    _check_in_window(w, at)
                t_rto = time.monotonic()
                requested = datetime.now(UTC)
                with timed_phase(res, "restore", _no_progress, signals) as ph:
                    asked = True  # from the request on, teardown destroys new_name (absent is fine)
                    restored = backups.restore(at=at, new_name=new_name)
                    res.restored_name = restored.name
                    at = restored.requested_at if restored.requested_at is not None else at  # as the platform took it
                    res.requested_at = at
                    ph.detail = f"{product} restore into {restored.name} (a new cluster)"
                with timed_phase(res, "verify", _no_progress, signals) as ph:
                    v = VerifyResult(level="pitr", env=env, backup_id=f"{product}:{res.cluster}",
                                     started_at=started.strftime("%Y-%m-%dT%H:%M:%SZ"))
                    res.verification = v
                    with backups.connect(restored) as server_url:
                        _verify(res, v, server_url, at or requested, requested, manifests or [], database)
                    ph.ok = v.ok
                    ph.detail = f"{sum(c.ok for c in v.checks)}/{len(v.checks)} checks passed"
                res.rto_measured = time.monotonic() - t_rto
            except KeyboardInterrupt:
                res.interrupted = True
                res.error = "interrupted by a signal"
            except (OpsError, psycopg.Error) as e:
                msg = e.message if isinstance(e, OpsError) else f"database error: {e}"
                res.error = " ".join(msg.split())[:800]
                res.error_code = e.code if isinstance(e, OpsError) else ExitCode.FAILURE
            finally:
                with signals.defer():
                    _teardown(res, backups, restored or (RestoredCluster(product, new_name, at) if asked else None))
                    if signals.received is not None:
                        res.interrupted = True
                        res.error = res.error or "interrupted by a signal"
                    res.finished_at = datetime.now(UTC)
                    if write:
                        base = report_base or default_report_base(root, env, started)
                        json_path, md_path = write_reports(res.to_dict(), base)
                        res.reports = [str(json_path), str(md_path)]
        except KeyboardInterrupt:
            res.interrupted = True
    return res


def _check_in_window(w: RestoreWindow, at: datetime | None) -> None:
    if w.last_full is None:
        raise PreconditionFailed(f"{w.product} {w.cluster} has no complete full backup: nothing to restore from",
                                 fix="fly postgres backup create -a " + w.cluster if w.product == "flex" else None)
    if at is None:
        return
    if w.earliest is not None and at < w.earliest:
        raise PreconditionFailed(f"--at {_iso(at)} is before the earliest restorable time {_iso(w.earliest)}")
    if w.latest is not None and at > w.latest:
        raise PreconditionFailed(f"--at {_iso(at)} is after the latest restorable time {_iso(w.latest)} "
                                 "(WAL after it has not reached the platform's archive yet)",
                                 fix="pick an earlier --at, or wait for the archive (archive timeout)")


def _verify(res: PitrDrillResult, v: VerifyResult, server_url: Secret, at: datetime, requested: datetime,
            manifests: list[dict], database: str | None) -> None:
    before, after = bracketing(manifests, at) if manifests else (None, None)
    db = database or (before or {}).get("database") or "postgres"
    res.database = db
    url = pgconn.with_dbname(server_url, db)
    with pgconn.connect(url) as conn:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        actual = database_facts(conn)
        conn.execute("COMMIT")
    v.checks.append(Check("connect", True, f"{db} on the restored cluster: {len(actual['tables'])} tables, "
                                           f"{sum(actual['tables'].values())} rows"))
    if before is None:
        v.checks.append(Check("compare", True, "no logical backup was taken at or before that time: nothing to "
                                               "compare with (row counts are in the report)"))
    else:
        res.compared_with = [m["id"] for m in (before, after) if m]
        problems = compare_bracketed(actual, before, after)
        around = f"{before['id']}" + (f" .. {after['id']}" if after else " (the newest before that time)")
        v.checks.append(Check("matches logical backups", not problems,
                              "; ".join(problems)[:1200] if problems else
                              f"row counts, schema head, extensions, owners and grants consistent with {around}"))
    ts, how = newest_commit(url, min(at, requested))
    res.newest_commit, res.rpo_source = ts, how
    if ts is not None:
        res.rpo_measured = max(0.0, (at - ts).total_seconds())
    v.checks.append(Check("rpo", True, f"newest transaction {_iso(ts)} ({how})" if ts else how))




def _no_progress(**event: Any) -> None:
    """The point-in-time drill reports its phases in the result only."""


def _teardown(res: PitrDrillResult, backups: PlatformBackups, restored: RestoredCluster | None) -> None:
    if restored is None:
        return
    ph = Phase("teardown")
    t0 = time.monotonic()
    try:
        backups.destroy(restored)
        ph.ok, ph.detail = True, f"{restored.name} destroyed"
    except Exception as e:  # noqa: BLE001 - report it; the drill failed if the cluster stays
        ph.detail = f"could not destroy {restored.name}: {' '.join(str(e).split())[:300]}"
        if res.error is None:
            res.error, res.error_code = f"teardown incomplete: {ph.detail}", ExitCode.FAILURE
    ph.seconds = time.monotonic() - t0
    res.phases.append(ph)


def logical_manifests(repo_config: Any, env: str, at: datetime) -> list[dict]:
    """The manifests of the logical backups just before and just after `at` (at most two reads)."""
    from flyops.db.catalog import MANIFEST_FILE, find_backup, list_backups
    from flyops.db.hosts import LocalHost
    from flyops.db.restic import Repo

    rows = [r for r in list_backups(repo_config, env) if r.get("when")]
    before = max((r for r in rows if r["when"] <= at), key=lambda r: r["when"], default=None)
    after = min((r for r in rows if r["when"] > at), key=lambda r: r["when"], default=None)
    repo = Repo(repo_config, LocalHost())
    out = []
    for r in (before, after):
        if r is not None:
            _, man = find_backup(repo, env, r["id"])
            out.append(repo.read_json(man["id"], MANIFEST_FILE))
    return out


def pitr_app_name(project: str, env: str, now: datetime | None = None) -> str:
    """<project>-pitr-<env>-<yymmddhhmmss>: a new app per drill (a restore never reuses one)."""
    now = now or datetime.now(UTC)
    return re.sub(r"[^a-z0-9-]", "-", f"{project}-pitr-{env}-{now:%y%m%d%H%M%S}".lower())[:63].strip("-")


def combined_report(results: list[dict]) -> dict:
    """One report holding both layers: the worst outcome wins."""
    order = ["passed", "target_missed", "failed", "interrupted"]
    worst = max(results, key=lambda r: order.index(r.get("outcome", "failed")))
    return {"kind": "dr.drill", "env": worst.get("env"), "started_at": results[0].get("started_at"),
            "finished_at": results[-1].get("finished_at"), "layers": results, "outcome": worst.get("outcome"),
            "exit_code": worst.get("exit_code")}


@dataclass
class LayersDone:
    """What `dr.drill --layer pitr|both` did: each layer's result and the report printed."""

    results: list[Any]  # the logical DrillResult first (layer both), then the PitrDrillResult
    pitr: Any
    report: dict

    def worst(self) -> Any:
        order = ["passed", "target_missed", "failed", "interrupted"]
        return max(self.results, key=lambda r: order.index(r.outcome))


def drill_layers(stack: Any, envfile: Any, runner: Any, repo: Any, *, root: Path, layer: str, at: str | None,
                 backup: str, logical_target: Callable[[], Any], keep: bool, rto: float | None,
                 rpo: float | None, report: str | None) -> LayersDone:
    """--layer pitr: the platform's point-in-time restore of the stack's cluster (flex or mpg);
    --layer both: the logical drill first, then the platform's, in one report. BadInput when
    the stack has no point-in-time layer."""
    from flyops.db.drill import run_drill
    from flyops.db.platform import platform_backups
    from flyops.errors import BadInput, OpsError

    when = parse_at(at)
    platform = platform_backups(stack, envfile, runner)
    if platform is None:
        raise BadInput(f"--layer {layer}: {stack.env} has no platform point-in-time backups",
                       fix=f"set database.pitr = true in fly/{stack.env}.toml (database.source = \"fly\"), "
                           "or use database.source = \"mpg\"; then inv up")
    started = datetime.now(UTC)
    base = Path(report) if report else default_report_base(root, stack.env, started)
    layers: list[dict] = []
    results: list[Any] = []
    if layer == "both":
        with tempfile.TemporaryDirectory(prefix="flyops-drill-") as tmp:
            logical = run_drill(env=stack.env, repo_config=repo, backup=backup, target=logical_target(),
                                rto=rto, rpo=rpo, smoke_queries=stack.backup.smoke_queries, jobs=stack.backup.jobs,
                                keep=keep, report_base=Path(tmp) / "logical", root=root)
        layers.append(logical.to_dict())
        results.append(logical)
    try:
        manifests = logical_manifests(repo, stack.env, when or datetime.now(UTC))
    except OpsError:  # no logical repository (yet): the drill says nothing brackets the time
        manifests = []
    pitr = run_pitr_drill(env=stack.env, backups=platform, at=when, selection=at or "latest",
                          new_name=pitr_app_name(stack.project.name, stack.env), manifests=manifests,
                          database=stack.database.name, rto=rto, rpo=rpo, report_base=base, root=root,
                          write=layer == "pitr")
    results.append(pitr)
    if layer == "both":
        layers.append(pitr.to_dict())
        json_path, md_path = write_reports(combined_report(layers), base)
        for r in results:
            r.reports = [str(json_path), str(md_path)]
    return LayersDone(results, pitr, combined_report(layers) if layer == "both" else pitr.to_dict())
