"""Verification building blocks (the drill composes them): integrity, decode, compare.

Each returns a dict with `ok` (bool), `level` and `problems` (readable lines), ready for
`record_verification`."""

from __future__ import annotations

import contextlib
import shlex
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import psycopg
from psycopg import sql as psql

from flyops.db import pgconn
from flyops.db.backup import SHA256_FUNCTION, parse_kv
from flyops.db.catalog import MANIFEST_FILE, find_backup, list_backups, record_verification
from flyops.db.config import DEFAULT_TOOLS, RepoConfig, Tools
from flyops.db.hosts import Host, LocalHost
from flyops.db.manifest import compare_facts, database_facts
from flyops.db.restic import Repo, explain_failure, tag_value
from flyops.errors import BadInput, ExitCode, OpsError, PreconditionFailed, VerificationFailed
from flyops.secret import Secret
from flyops.units import format_duration


def resolve(repo: Repo, backup: dict | str, env: str | None) -> tuple[dict, dict]:
    """(dump snapshot, manifest) for a manifest dict or an id/`latest` (then `env` is needed)."""
    if isinstance(backup, dict):
        env, ref = backup["environment"], backup["id"]
    else:
        ref = backup
        if env is None:
            raise ValueError("env is required when backup is given by id")
    dump_snap, man_snap = find_backup(repo, env, ref)
    return dump_snap, repo.read_json(man_snap["id"], MANIFEST_FILE)


def dump_path(manifest: dict) -> str:
    return "/" + manifest["file"]


def integrity_script(repo: Repo, snapshot_id: str, path: str) -> str:
    return (SHA256_FUNCTION
            + f"{shlex.join(repo.argv('dump', snapshot_id, path))} | sha256_of > \"${{TMPDIR:-/tmp}}/.flyops-sha.$$\"\n"
            "st=(\"${PIPESTATUS[@]}\")\n"
            "echo \"rc_fetch=${st[0]}\"\n"
            "echo \"sha256=$(cat \"${TMPDIR:-/tmp}/.flyops-sha.$$\")\"\n"
            "rm -f \"${TMPDIR:-/tmp}/.flyops-sha.$$\"\n")


def check_integrity(repo: Repo, backup: dict | str, *, env: str | None = None,
                    read_data_subset: str | None = None) -> dict:
    """`restic check` (optionally reading a subset of pack data) and the SHA-256 of
    `restic dump` against the manifest."""
    dump_snap, manifest = resolve(repo, backup, env)
    problems: list[str] = []
    args = ["check"] + ([f"--read-data-subset={read_data_subset}"] if read_data_subset else [])
    r = repo.run(*args, check=False)
    if not r.ok:
        problems.append(explain_failure(r, "check", repo.location).message)
    r = repo.host.run_script(integrity_script(repo, dump_snap["id"], dump_path(manifest)), repo.config.secrets())
    out = parse_kv(r.stdout)
    if out.get("rc_fetch") != "0":
        problems.append(f"restic dump failed (exit {out.get('rc_fetch')}): {r.stderr.strip()[-500:]}")
    elif out.get("sha256") != manifest["sha256"]:
        problems.append(f"SHA-256 of the stored dump {out.get('sha256')} differs from the manifest {manifest['sha256']}")
    return {"ok": not problems, "level": "integrity", "backup_id": manifest["id"], "problems": problems}


def decode(repo: Repo, backup: dict | str, *, env: str | None = None) -> dict:
    """Stream the dump through `pg_restore -f /dev/null`: catches truncation `--list` misses."""
    dump_snap, manifest = resolve(repo, backup, env)
    script = (f"{shlex.join(repo.argv('dump', dump_snap['id'], dump_path(manifest)))} 2>\"${{TMPDIR:-/tmp}}/.flyops-err.$$\" "
              f"| {shlex.join([repo.tools.pg_restore, '--file=/dev/null'])}\n"
              "st=(\"${PIPESTATUS[@]}\")\n"
              "echo \"rc_fetch=${st[0]}\"; echo \"rc_decode=${st[1]}\"\n"
              "cat \"${TMPDIR:-/tmp}/.flyops-err.$$\" >&2; rm -f \"${TMPDIR:-/tmp}/.flyops-err.$$\"\n")
    r = repo.host.run_script(script, repo.config.secrets())
    out = parse_kv(r.stdout)
    problems = []
    if out.get("rc_fetch") != "0":
        problems.append(f"restic dump failed (exit {out.get('rc_fetch')})")
    if out.get("rc_decode") != "0":
        problems.append(f"pg_restore could not decode the dump (exit {out.get('rc_decode')}): "
                        f"{r.stderr.strip()[-500:]}")
    return {"ok": not problems, "level": "decode", "backup_id": manifest["id"], "problems": problems}


def compare_with_manifest(db_url: Secret, manifest: dict) -> dict:
    """Exact row counts per table, schema_migrations head, extension versions, large-object
    count, and (manifests that record them) owners, grants, default privileges, SECURITY
    DEFINER functions, policy roles and the database's own properties of a restored database
    against the manifest."""
    with pgconn.connect(db_url) as conn:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        actual = database_facts(conn)
        conn.execute("COMMIT")
    problems = compare_facts(manifest, actual)
    return {"ok": not problems, "level": "restore", "backup_id": manifest.get("id"), "problems": problems,
            "tables": len(actual["tables"]), "rows": sum(actual["tables"].values())}


# -- db.verify: the levels, composed from the blocks above ------------------------------------
#
# Added by the drill/verify side; the blocks above are the backup core's.

LEVELS = ("fresh", "integrity", "decode", "restore")


@dataclass
class Check:
    name: str
    ok: bool
    detail: str = ""

    def to_dict(self) -> dict:
        return {"name": self.name, "ok": self.ok, "detail": self.detail}


@dataclass
class VerifyResult:
    """What `db.verify` found. JSON-serialisable via `to_dict()`; `exit_code` is 0 or 3."""

    level: str
    env: str
    backup_id: str | None = None
    checks: list[Check] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)  # phase -> seconds (time.monotonic)
    started_at: str = ""
    recorded: str | None = None  # snapshot id of the verification record, when recorded

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.OK if self.ok else ExitCode.VERIFY_FAILED

    def add(self, name: str, ok: bool, detail: str = "") -> Check:
        c = Check(name, bool(ok), detail)
        self.checks.append(c)
        return c

    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]

    def to_dict(self) -> dict:
        return {"level": self.level, "env": self.env, "backup_id": self.backup_id, "ok": self.ok,
                "checks": [c.to_dict() for c in self.checks],
                "timings": {k: round(v, 4) for k, v in self.timings.items()},
                "started_at": self.started_at, "recorded": self.recorded}

    def raise_if_failed(self) -> None:
        """VerificationFailed (exit 3) naming every failed check; nothing when all passed."""
        if self.ok:
            return
        bad = self.failures() or [Check("checks", False, "no check ran")]
        lines = "; ".join(f"{c.name}: {c.detail}" if c.detail else c.name for c in bad)
        raise VerificationFailed(f"{self.level} verification of {self.backup_id or self.env} failed: {lines}",
                                 fix="see `inv db.list` for other backups; `inv db.verify --level restore` "
                                     "proves one end to end")


@contextlib.contextmanager
def _timed(result: VerifyResult, name: str) -> Iterator[None]:
    t0 = time.monotonic()
    try:
        yield
    finally:
        result.timings[name] = result.timings.get(name, 0.0) + (time.monotonic() - t0)


def _problems_check(result: VerifyResult, name: str, block: dict, ok_detail: str) -> bool:
    problems = block.get("problems") or []
    result.add(name, block.get("ok", False) and not problems, "; ".join(problems) if problems else ok_detail)
    return result.checks[-1].ok


def check_fresh(result: VerifyResult, rows: list[dict], max_age: float, now: datetime | None = None) -> bool:
    """Adds the `fresh` check: the newest complete backup started less than `max_age` seconds ago."""
    now = now or datetime.now(UTC)
    newest = max((r for r in rows if r.get("when")), key=lambda r: r["when"], default=None)
    if newest is None:
        result.add("fresh", False, f"no complete backup of {result.env} at all")
        return False
    age = (now - newest["when"]).total_seconds()
    ok = age < max_age
    result.add("fresh", ok, f"newest backup {newest['id']} is {format_duration(age)} old "
                            f"({'under' if ok else 'OVER'} the {format_duration(max_age)} limit)")
    return ok


def run_smoke_queries(db_url: Secret, queries: Sequence[str], *, timeout_s: float = 30.0) -> list[Check]:
    """Each query must return exactly one row whose first column is true. Read-only transaction."""
    checks: list[Check] = []
    if not queries:
        return checks
    with pgconn.connect(db_url) as conn:
        for q in queries:
            name = "smoke: " + " ".join(q.split())[:120]
            try:
                with conn.transaction():
                    conn.execute("SET TRANSACTION READ ONLY")
                    conn.execute(psql.SQL("SET LOCAL statement_timeout = {}").format(int(timeout_s * 1000)))
                    rows = conn.execute(q).fetchall()
            except psycopg.Error as e:
                checks.append(Check(name, False, f"error: {' '.join(str(e).split())[:300]}"))
                continue
            if len(rows) != 1 or not rows[0]:
                checks.append(Check(name, False, f"returned {len(rows)} rows; expected one row with one boolean"))
            elif rows[0][0] is not True:
                checks.append(Check(name, False, f"returned {rows[0][0]!r}; expected true"))
            else:
                checks.append(Check(name, True, "true"))
    return checks


def check_restored(result: VerifyResult, db_url: Secret, manifest: dict, smoke_queries: Sequence[str]) -> dict:
    """The restore-level checks on a restored database: exact facts against the manifest
    (per-table row counts, schema_migrations head, extensions, large objects), then smoke SQL.
    Returns the comparison block (with `tables` and `rows` counts)."""
    with _timed(result, "compare"):
        block = compare_with_manifest(db_url, manifest)
    _problems_check(result, "matches manifest", block,
                    f"{block.get('tables')} tables / {block.get('rows')} rows, migration head "
                    f"{manifest.get('schema_migrations_head')}, {len(manifest.get('extensions') or [])} extensions, "
                    f"{manifest.get('large_objects')} large objects"
                    + (f", owners and grants of {len(manifest['security']['objects'])} objects, "
                       f"{len(manifest['security']['security_definer'])} SECURITY DEFINER functions, "
                       f"default privileges, policies, database settings and ACL" if manifest.get("security") else "")
                    + ": all exactly as recorded")
    with _timed(result, "smoke"):
        result.checks += run_smoke_queries(db_url, smoke_queries)
    return block


def verify(level: str, *, env: str, repo_config: RepoConfig, backup: str | dict = "latest",
           max_age: float | None = None, smoke_queries: Sequence[str] = (), read_data_subset: str | None = None,
           jobs: int = 2, server_url: Secret | None = None, host: Host | None = None,
           tools: Tools = DEFAULT_TOOLS, record: bool = True, now: datetime | None = None,
           copies: Sequence[RepoConfig] = ()) -> VerifyResult:
    """`db.verify`: check one backup at `level`; returns a VerifyResult (call `raise_if_failed()`).

    fresh      the newest complete backup is younger than `max_age` seconds
    integrity  + `restic check` (`--read-data-subset`) and the dump's SHA-256 against the manifest
    decode     + the whole dump streamed through `pg_restore -f /dev/null`
    restore    integrity, then restore into scratch (a new database on `server_url`, or a
               ScratchCluster started and removed here), compare exactly with the manifest, smoke SQL.
               (No separate decode: the restore reads every entry.)

    Every level but `fresh` also checks the backup in each of `copies` (backup.copies:
    `flyops.db.copies.verify_copy`), one check per copy named by its location.

    `fresh` is included in the others when `backup` is "latest" and `max_age` is given.
    `backup` may be an id, "latest", or a manifest dict as `db.backup` returns it.
    Integrity and higher levels are recorded with the backup (`record_verification`) so
    `db.list` shows them; `fresh` alone is not a statement about a backup and is not recorded.
    """
    if level not in LEVELS:
        raise BadInput(f"--level {level!r}: expected one of {', '.join(LEVELS)}")
    if level == "fresh" and max_age is None:
        raise BadInput("--level fresh needs --max-age (e.g. 26h)")
    host = host or LocalHost()
    result = VerifyResult(level=level, env=env, started_at=(now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ"))
    repo = Repo(repo_config, host, tools)

    if max_age is not None and (level == "fresh" or backup == "latest"):
        with _timed(result, "fresh"):
            rows = list_backups(repo_config, env, host=host, tools=tools)
            check_fresh(result, rows, max_age, now)
            if rows:
                result.backup_id = result.backup_id or rows[0]["id"]
    if level == "fresh":
        return result

    with _timed(result, "resolve"):
        manifest = _load_manifest(result, repo, backup, env)
    if manifest is None:
        return _finish(result, repo_config, host, tools, record=False)
    result.backup_id = manifest["id"]

    with _timed(result, "integrity"):
        block = check_integrity(repo, manifest, read_data_subset=read_data_subset)
    _problems_check(result, "integrity", block,
                    "restic check passed; dump SHA-256 matches the manifest"
                    + (f" (read-data-subset {read_data_subset})" if read_data_subset else ""))
    integrity_ok = result.checks[-1].ok

    if level == "decode":
        with _timed(result, "decode"):
            block = decode(repo, manifest)
        _problems_check(result, "decode", block, "pg_restore read the whole dump")
    for copy in copies:  # the same backup, in every repository off the platform
        pass

        with _timed(result, "copies"):
            block = verify_copy(manifest, copy, env, host, tools=tools, read_data_subset=read_data_subset)
        _problems_check(result, f"copy {copy.location}", block,
                        "dump and manifest there; restic check passed; dump SHA-256 matches the manifest")
    if level == "restore":
        if not integrity_ok:
            result.add("restore", False, "not attempted: the stored dump failed its integrity check")
        else:
            _verify_by_restore(result, repo_config, manifest, env, smoke_queries, jobs, server_url, host, tools)
    return _finish(result, repo_config, host, tools, record=record)


def _load_manifest(result: VerifyResult, repo: Repo, backup: str | dict, env: str) -> dict | None:
    """The manifest, or None after adding a failed check when the stored manifest cannot be read.
    An unknown id stays BadInput (exit 2); an unreachable repository stays OpsError (exit 1)."""
    if isinstance(backup, dict):
        return backup
    _dump, man_snap = find_backup(repo, env, backup)
    try:
        return repo.read_json(man_snap["id"], MANIFEST_FILE)
    except (OpsError, ValueError) as e:
        result.backup_id = tag_value(man_snap, "id")
        result.add("manifest readable", False, " ".join(str(e).split())[:400])
        return None


def _verify_by_restore(result: VerifyResult, repo_config: RepoConfig, manifest: dict, env: str,
                       smoke_queries: Sequence[str], jobs: int, server_url: Secret | None, host: Host,
                       tools: Tools) -> None:
    from flyops.db.restore import restore as restore_backup
    from flyops.db.scratch import ScratchCluster

    with contextlib.ExitStack() as stack:
        if server_url is None:
            with _timed(result, "provision"):
                major = int(manifest.get("server_version_num") or 0) // 10000 or None
                try:
                    cluster = stack.enter_context(ScratchCluster(major=major))
                except PreconditionFailed:
                    cluster = stack.enter_context(ScratchCluster())  # newest installed; restore checks versions
            server_url = cluster.url("postgres")
        try:
            with _timed(result, "restore"):
                out = restore_backup(manifest["id"], env=env, repos={env: repo_config}, server_url=server_url,
                                     host=host, tools=tools, jobs=jobs)
        except VerificationFailed as e:
            result.add("restore", False, e.message)
            return
        except OpsError as e:
            if e.code == ExitCode.PRECONDITION:
                raise  # the scratch target cannot take this backup: not a verdict on the backup
            result.add("restore", False, " ".join(e.message.split())[:600])
            return
        db = out["database"]
        result.add("restore", True, f"pg_restore --exit-on-error -j {jobs} into scratch database {db}")
        db_url = pgconn.with_dbname(server_url, db)
        try:
            check_restored(result, db_url, manifest, smoke_queries)
        finally:
            with contextlib.suppress(Exception), pgconn.connect(server_url) as admin:
                admin.execute(psql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(psql.Identifier(db)))


def _finish(result: VerifyResult, repo_config: RepoConfig, host: Host, tools: Tools, *, record: bool) -> VerifyResult:
    if record and result.backup_id:
        result.recorded = record_verification(repo_config, result.env, result.backup_id, result.to_dict(),
                                              host=host, tools=tools)
    return result


def verify_copy(primary_manifest: dict, copy: RepoConfig, env: str, host: Host, *, tools: Tools = DEFAULT_TOOLS,
                read_data_subset: str | None = None) -> dict:
    """The backup in one copy: its dump and manifest snapshots are there, the copy's manifest
    is the primary's (same SHA-256), `restic check` (with `read_data_subset`) passes, and the
    dump `restic dump` streams from the copy has the manifest's SHA-256."""
    repo = Repo(copy, host, tools)
    bid = primary_manifest["id"]
    problems: list[str] = []
    try:
        dump_snap, man_snap = find_backup(repo, env, bid)
        theirs = repo.read_json(man_snap["id"], MANIFEST_FILE)
    except OpsError as e:
        return {"ok": False, "location": copy.location, "problems": [f"backup {bid} not there: {e.message}"]}
    except ValueError as e:
        return {"ok": False, "location": copy.location, "problems": [f"manifest of {bid} unreadable: {e}"]}
    if theirs.get("sha256") != primary_manifest["sha256"]:
        problems.append("its manifest differs from the primary's")
    args = ["check"] + ([f"--read-data-subset={read_data_subset}"] if read_data_subset else [])
    # append-only: every restic run there leaves its lock file (it may not delete it), and
    # `check` wants an exclusive lock, so it would always fail as "locked" (exit 11, tested in
    # tests/tasks/test_append_only.py); nothing can prune there meanwhile with these keys
    r = repo.run(*args, *(["--no-lock"] if copy.append_only else []), check=False)
    if not r.ok:
        problems.append(explain_failure(r, "check", copy.location).message)
    r = host.run_script(integrity_script(repo, dump_snap["id"], dump_path(primary_manifest)), copy.secrets())
    out = parse_kv(r.stdout)
    if out.get("rc_fetch") != "0":
        problems.append(f"restic dump failed (exit {out.get('rc_fetch')}): {r.stderr.strip()[-300:]}")
    elif out.get("sha256") != primary_manifest["sha256"]:
        problems.append(f"SHA-256 of the copied dump {out.get('sha256')} differs from the manifest's")
    return {"ok": not problems, "location": copy.location, "problems": problems}
