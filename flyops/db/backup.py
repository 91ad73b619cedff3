"""Take a backup: pg_dump -Fc -Z0 streamed into restic, checked, then a manifest.

A backup is *listed* only when both of its snapshots exist: the dump (written first) and the
manifest (written only after pg_dump, tee, the hash and restic all exited 0 and the byte
counts agreed). A failed run forgets whatever dump snapshot it produced; should even that fail
(e.g. SIGKILL), the orphan dump is invisible to listings and restores, and `prune` removes it.

Restic 0.14 has no `--stdin-from-command`, so the pipeline is a bash script that records
every process's exit status (PIPESTATUS) and hashes/counts the stream through FIFOs:

    pg_dump | tee sha.fifo len.fifo | restic backup --stdin
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shlex
import tempfile
import urllib.request
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from flyops.db import database, pgconn
from flyops.db.catalog import MANIFEST_FILE, manifest_tags
from flyops.db.config import DEFAULT_TOOLS, BackupSource, Notify, RepoConfig, Tools
from flyops.db.hosts import Host, LocalHost, RunResult
from flyops.db.manifest import KINDS, database_facts, new_backup_id, utcnow
from flyops.db.restic import Repo, classify, explain_failure, parse_summary
from flyops.errors import BadInput, Busy, OpsError, PreconditionFailed
from flyops.procs import operator
from flyops.progress import report
from flyops.secret import Secret, redact

LOCK_CLASS = 0x666C79  # advisory lock class id ("fly"); the object id is hashtext('flyops-backup:<env>')


# -- locking ------------------------------------------------------------------------------


def default_lock_dir() -> Path:
    return Path(os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()) / "flyops-locks"


@contextlib.contextmanager
def backup_lock(env: str, lock_dir: Path | None = None) -> Iterator[None]:
    """Local flock per environment; a second run fails at once with Busy (exit 4)."""
    d = Path(lock_dir or default_lock_dir())
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"backup-{env}.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Busy(f"another backup of {env} is running (lock {path} is held)",
                       fix="wait for it to finish; backups never queue") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        os.close(fd)


def try_advisory_lock(conn, env: str) -> None:
    """Session-level advisory lock in the source DB (cross-host); released on disconnect."""
    got = conn.execute("SELECT pg_try_advisory_lock(%s, hashtext(%s))", (LOCK_CLASS, f"flyops-backup:{env}")).fetchone()[0]
    if not got:
        raise Busy(f"another backup of {env} holds the database advisory lock",
                   fix="wait for it to finish; backups never queue")


# -- script builders (pure) -----------------------------------------------------------------


#: The dump's name inside its restic snapshot. One name for every database, so that a restore
#: can start `restic dump` before the manifest (which names the database) is read; the
#: database's name is in the manifest. Backups taken before this were named `<db>.dump`,
#: which the manifest's `file` records, and restore reads them as before.
DUMP_FILE = "database.dump"


def pg_dump_argv(tools: Tools, conninfo: str, snapshot: str | None) -> list[str]:
    argv = [tools.pg_dump, "--format=custom", "--compress=0"]
    if snapshot:
        argv.append(f"--snapshot={snapshot}")
    return argv + ["--dbname", conninfo]


#: A bash function printing the SHA-256 (hex) of stdin. OpenSSL's hand-tuned code hashes about
#: twice as fast as coreutils' sha256sum on CPUs without SHA instructions (bench/results/backup.md);
#: sha256sum is the fallback on hosts without openssl.
SHA256_FUNCTION = (
    'sha256_of() { if command -v openssl >/dev/null 2>&1; then openssl dgst -sha256 -r; '
    'else sha256sum; fi | cut -d" " -f1; }\n'
)


def backup_script(dump_argv: list[str], restic_argv: list[str]) -> str:
    """The pipeline. Prints key=value lines: rc_pg_dump, rc_tee, rc_restic, rc_sha, sha256,
    summary (restic's JSON summary line, whose total_bytes_processed is the dump's size).
    Child stderr tails go to stderr. Every process's exit status is reported, because a
    pipe alone reports only the last one (restic would store a truncated dump happily)."""
    return SHA256_FUNCTION + f"""\
work=$(mktemp -d "${{TMPDIR:-/tmp}}/flyops-backup.XXXXXX") || exit 90
trap 'rm -rf "$work"' EXIT
trap 'exit 143' TERM INT HUP  # so that the EXIT trap runs when the session is ended (LocalHost, systemd)
mkfifo "$work/sha.fifo" || exit 91
sha256_of < "$work/sha.fifo" > "$work/sha" & sha_pid=$!
export RESTIC_PROGRESS_FPS=2  # restic --json prints a status line (bytes_done) this often
{{ while sleep 0.5 </dev/null >/dev/null 2>&1; do  # a killed loop's sleep must not hold the script's pipes
    b=$(tail -c 1000 "$work/restic.out" 2>/dev/null | grep -o '"bytes_done":[0-9]*' | tail -n 1)
    [ -z "$b" ] || echo "@flyops-progress phase=dump bytes=${{b#*:}}" >&2
  done; }} & progress_pid=$!
trap 'kill "$progress_pid" 2>/dev/null; rm -rf "$work"' EXIT
{shlex.join(dump_argv)} 2> "$work/pg_dump.err" \\
  | tee "$work/sha.fifo" \\
  | {shlex.join(restic_argv)} > "$work/restic.out" 2> "$work/restic.err"
st=("${{PIPESTATUS[@]}}")
wait "$sha_pid"; rc_sha=$?
kill "$progress_pid" 2>/dev/null
echo "rc_pg_dump=${{st[0]}}"
echo "rc_tee=${{st[1]}}"
echo "rc_restic=${{st[2]}}"
echo "rc_sha=$rc_sha"
echo "sha256=$(cat "$work/sha")"
echo "summary=$(grep '"message_type":"summary"' "$work/restic.out" | tail -n 1)"
{{ echo "--- pg_dump:"; tail -c 3000 "$work/pg_dump.err"; echo "--- restic:"; tail -c 3000 "$work/restic.err"; }} >&2
"""


def parse_kv(stdout: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in stdout.splitlines():
        k, sep, v = line.partition("=")
        if sep and re.match(r"^[a-z_0-9]+$", k):
            out[k] = v
    return out


_PG_VERSION = re.compile(r"\(PostgreSQL\)\s+((\d+)\S*)")


def client_version(host: Host, binary: str) -> tuple[int, str]:
    """(major, full version string) of pg_dump/pg_restore on the host."""
    r = host.run_script(shlex.join([binary, "--version"]) + "\n")
    m = _PG_VERSION.search(r.stdout)
    if not r.ok or not m:
        raise PreconditionFailed(f"{binary} not usable on {host.name}: {(r.stderr or r.stdout).strip()[-300:]}",
                                 fix="run scripts/setup (installs postgresql-client) on that host")
    return int(m.group(2)), m.group(1)


def check_versions(dump_major: int, server_version_num: int, tool: str = "pg_dump") -> None:
    server_major = server_version_num // 10000
    if dump_major < server_major:
        raise PreconditionFailed(
            f"{tool} {dump_major} is older than the server ({server_major}); it would refuse or produce a bad dump",
            fix=f"install the PostgreSQL {server_major} client on the host that runs the backup",
        )


# -- notifications --------------------------------------------------------------------------


def _send(url: Secret, data: bytes | None, timeout: float) -> str | None:
    try:
        req = urllib.request.Request(url.reveal(), data=data, method="POST" if data is not None else "GET",
                                     headers={"Content-Type": "application/json"} if data else {})
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            resp.read(1024)
        return None
    except Exception as e:  # noqa: BLE001 - a notification failure must not mask the backup result
        return redact(f"{type(e).__name__}: {e}", [url])


def notify_success(notify: Notify | None) -> str | None:
    if notify and notify.heartbeat_url:
        return _send(notify.heartbeat_url, None, notify.timeout)
    return None


def notify_failure(notify: Notify | None, env: str, kind: str, error: OpsError | BaseException) -> str | None:
    if notify and notify.failure_webhook:
        text = f"flyops backup of {env} ({kind}) failed: {getattr(error, 'message', str(error))}"
        body = json.dumps({"text": text[:3000], "env": env, "kind": kind,
                           "exit_code": int(getattr(error, "code", 1))}).encode()
        return _send(notify.failure_webhook, body, notify.timeout)
    return None


# -- backup -------------------------------------------------------------------------------------


def backup(source: BackupSource, repo_config: RepoConfig, *, host: Host | None = None, kind: str = "manual",
           reason: str = "", pinned: bool = False, tools: Tools = DEFAULT_TOOLS, notify: Notify | None = None,
           lock_dir: Path | None = None, init: bool = False, role_passwords: bool = False) -> dict:
    """Back up `source` into the repository; returns the manifest. Raises Busy, PreconditionFailed, OpsError.

    The repository must exist (PreconditionFailed otherwise) unless `init` (the first run's
    `--init`): a backup never re-creates a repository that was deleted. The lock is held twice:
    on this machine (a flock, answers at once) and in the repository (`repository_lock`, seen by
    every machine that backs up there).

    The manifest records the roles the database uses (`pg_dumpall --roles-only`, filtered;
    their password hashes only with `role_passwords`), the database's own properties and who
    owns and may use what (`flyops.db.database`, `flyops.db.manifest.security_facts`)."""
    from flyops.db.repolock import repository_lock

    if kind not in KINDS:
        raise BadInput(f"kind {kind!r}: expected one of {', '.join(KINDS)}")
    host = host or LocalHost()
    try:
        with backup_lock(source.env, lock_dir):
            repo = Repo(repo_config, host, tools)
            if init:
                repo.init()
            else:
                repo.require()
            report(host, phase="lock")
            with repository_lock(repo, source.env), host.reach(source.url) as session_url:
                return _backup_locked(source, session_url, repo, host, kind, reason,
                                      pinned or kind == "pre-restore", tools, notify, role_passwords)
    except Busy:
        raise  # the other run reports for itself
    except (OpsError, KeyboardInterrupt) as e:
        notify_failure(notify, source.env, kind, e)
        raise


def _backup_locked(source: BackupSource, session_url: Secret, repo: Repo, host: Host, kind: str,
                   reason: str, pinned: bool, tools: Tools, notify: Notify | None,
                   role_passwords: bool = False) -> dict:
    """pg_dump runs on `host` with `source.url`; this process's SQL session (exported snapshot,
    counts, advisory lock) uses `session_url`, the same database as reached from here."""
    repo_config = repo.config
    db = pgconn.dbname(source.url)
    backup_id = new_backup_id(kind)
    conn = pgconn.connect(session_url)
    facts_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="backup-facts")
    facts_job: Future | None = None
    started = complete = False
    try:
        try_advisory_lock(conn, source.env)
        dump_major, dump_version = client_version(host, tools.pg_dump)
        server_num = int(conn.execute("SHOW server_version_num").fetchone()[0])
        check_versions(dump_major, server_num)

        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        snapshot = conn.execute("SELECT pg_export_snapshot()").fetchone()[0]
        # The manifest's facts (exact row counts) come from the dump's own snapshot. The session
        # stays in that transaction until pg_dump ends; the counts run on it in a thread while
        # pg_dump streams, so the server counts and dumps at once instead of one after the other.
        facts_job = facts_pool.submit(database_facts, conn)
        filename = DUMP_FILE
        tags = ["part=dump", f"id={backup_id}", f"env={source.env}", f"kind={kind}"]
        script = backup_script(pg_dump_argv(tools, pgconn.conninfo_without_password(source.url), snapshot),
                               repo.backup_argv(filename, tags, source.env))
        start = utcnow()
        started = True  # from here on a dump snapshot may exist
        r = host.run_script(script, {**pgconn.libpq_secrets(source.url), **repo_config.secrets()})
        end = utcnow()
        facts = facts_job.result()
        conn.execute("COMMIT")
        out = parse_kv(r.stdout)
        _check_pipeline(r, out, host, repo.location)
        roles = database.record_roles(host, tools, source.url, facts["referenced_roles"], passwords=role_passwords)
        s = parse_summary(out["summary"])
        manifest = {
            "format": 1,
            "id": backup_id,
            "environment": source.env,
            "database": db,
            "file": filename,
            "kind": kind,
            "pinned": pinned,
            "who": operator(),
            "ran_on": host.name,
            "reason": reason,
            "start": start,
            "end": end,
            "server_version": facts["server_version"],
            "server_version_num": facts["server_version_num"],
            "pg_dump_version": dump_version,
            "bytes": int(s["total_bytes_processed"]),
            "sha256": out["sha256"],
            "extensions": facts["extensions"],
            "large_objects": facts["large_objects"],
            "schema_migrations_head": facts["schema_migrations_head"],
            "tables": facts["tables"],
            "database_properties": facts["database_properties"],
            "security": facts["security"],
            "roles": roles,
            "restic_snapshot": s["snapshot_id"],
            "logical_bytes": s.get("total_bytes_processed"),
            "added_bytes": s.get("data_added"),
        }
        report(host, phase="manifest", bytes=manifest["bytes"])
        repo.store_json(MANIFEST_FILE, manifest, manifest_tags(manifest), source.env)
        complete = True
        notify_success(notify)
        return manifest
    finally:
        if facts_job is not None and not facts_job.done():
            with contextlib.suppress(Exception):
                conn.cancel()  # interrupted while counting: stop the query, then let the thread end
        facts_pool.shutdown(wait=True)
        with contextlib.suppress(Exception):
            conn.close()
        if started and not complete:
            _forget_partial(repo, backup_id)


def _forget_partial(repo: Repo, backup_id: str) -> None:
    """Remove every snapshot of an unfinished backup (found by tag, so it works without an id)."""
    with contextlib.suppress(Exception):
        ids = [s["id"] for s in repo.snapshots(f"id={backup_id}")]
        repo.forget(ids, prune=True)


def _section(stderr: str, name: str) -> str:
    """One process's stderr tail from the script's '--- name:' sections."""
    m = re.search(rf"^--- {re.escape(name)}:\n(.*?)(?=^--- [a-z_]+:$|\Z)", stderr, re.S | re.M)
    return m.group(1) if m else ""


def culprit(rcs: dict[str, str | None]) -> str:
    """Which process of `pg_dump | tee | restic` failed first. restic does not fail because
    its input ended early (it stores what it got, rc 0), while pg_dump and tee do fail when
    restic exits early (EPIPE: exit 1 or 141), so a failed restic is the cause whenever it
    failed; pg_dump only when restic did not."""
    if rcs.get("restic") not in ("0", None):
        return "restic"
    if rcs.get("pg_dump") not in ("0", None):
        return "pg_dump"
    return "pipeline"


def _check_pipeline(r: RunResult, out: dict[str, str], host: Host, location: str = "") -> None:
    rcs = {k: out.get(f"rc_{k}") for k in ("pg_dump", "tee", "restic", "sha")}
    tail = "\n".join(r.stderr.strip().splitlines()[-12:])
    if r.rc != 0 or any(v != "0" for v in rcs.values()):
        failed = ", ".join(f"{k} exit {v}" for k, v in rcs.items() if v != "0") or f"script exit {r.rc}"
        first = culprit(rcs)
        if first == "restic":
            restic_err = _section(r.stderr, "restic")
            if classify(int(rcs["restic"] or 1), restic_err):  # wrong password, no repository, locked
                e = explain_failure(RunResult(int(rcs["restic"] or 1), "", restic_err), "backup", location)
                raise type(e)(f"backup failed on {host.name}: {e.message}; no backup was recorded", fix=e.fix)
        fix = None
        if "no space left on device" in r.stderr.lower():
            fix = ("free space where the repository lives (or run `inv db.prune --env ENV --yes`, which also "
                   "reclaims what this failed upload left); the backups already in it are intact")
        raise OpsError(f"backup failed on {host.name}: {first} ({failed}); no backup was recorded\n{tail}", fix=fix)
    s = parse_summary(out.get("summary") or "")
    if not out.get("sha256") or len(out["sha256"]) != 64:
        raise OpsError("backup failed: no SHA-256 of the dump stream was computed; no backup was recorded")
    if not s.get("total_bytes_processed"):
        raise OpsError("backup failed: restic reports no bytes read from pg_dump; no backup was recorded")


# -- reading the repository ----------------------------------------------------------------------


