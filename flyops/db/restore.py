"""Restore a backup: by default into a NEW database; over a live one only when confirmed.

    ref: <id> | latest | ENV::latest | ENV::<id>   (ENV:: reads another environment's repository)

Steps: start fetching the newest matching dump on the host (`Prefetch`, unless the target is
live) while the manifest is read → preflight on the target server (extensions available,
pg_restore new enough, confirm name) → pinned `pre-restore` backup of a live target → create
`<db>_restore_<ts>` → on the host: loaders follow the temp file `restic dump` writes
(`restore_script`; a prefetch whose stream does not hash to the manifest's SHA-256 is redone
from the exact snapshot), `pg_restore --exit-on-error` (owners and grants kept, the roles they
name created first when the target lacks them: `flyops.db.database`) → Rails environment
fix-up → ANALYZE → the database's recorded comment, settings and ACL → for a live target:
terminate connections and swap by rename, keeping the old database as `<db>_pre_<ts>_<hex>`.

Names are built and checked in bytes (PostgreSQL cuts identifiers at NAMEDATALEN-1 = 63 bytes,
not characters) with a random suffix, and only what this run created (recorded as such once
its CREATE succeeded) is ever dropped.
"""

from __future__ import annotations

import contextlib
import re
import secrets
import shlex
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from psycopg import sql

from flyops.db import database, pgconn
from flyops.db.backup import DUMP_FILE, SHA256_FUNCTION, backup, check_versions, client_version, parse_kv
from flyops.db.catalog import fetch_manifest, latest_tag_args
from flyops.db.config import DEFAULT_TOOLS, BackupSource, RepoConfig, Tools
from flyops.db.hosts import Host, LocalHost
from flyops.db.restic import TAG, Repo
from flyops.errors import BadInput, OpsError, PreconditionFailed, VerificationFailed
from flyops.progress import report
from flyops.secret import Secret
from flyops.stack.model import ENV_NAME

_REF = re.compile(r"^(?:(" + ENV_NAME.pattern.strip("^$") + r")::)?(latest|\d{8}T\d{4,6}Z-[a-z-]+-[0-9a-f]{4})$")


def parse_ref(ref: str, env: str) -> tuple[str, str]:
    """'ENV::ID' -> (ENV, ID); 'latest' / '<id>' -> (env, ...). BadInput for anything else."""
    m = _REF.match(ref or "")
    if not m:
        raise BadInput(f"backup reference {ref!r}: expected <id>, latest, ENV::latest or ENV::<id>",
                       fix="see `inv db.list` for ids")
    return (m.group(1) or env), m.group(2)


_SIMPLE_NAME = re.compile(r"^[A-Za-z0-9_]+$")
_TABLE_KEY = re.compile(r'^"((?:[^"]|"")*)"\."((?:[^"]|"")*)"$')


#: A loader other than the first is started only for at least this share of the rows: each one
#: reads the whole stream up to its last table (pg_restore cannot seek in a stream), which costs
#: about as much client CPU as the first loader's COPY, for no gain when its tables are small
#: (pgbench: 550 rows beside 5 M; measured in bench/results/restore.md).
MIN_LOADER_SHARE = 0.1


def split_tables(tables: Mapping[str, int], jobs: int,
                 min_share: float = MIN_LOADER_SHARE) -> list[list[tuple[str, str]]]:
    """Share the tables' data among `jobs` loaders by the manifest's row counts (greedy, largest
    first). Loader 0 also takes every other data entry (sequences, large objects, tables whose
    names need quoting), so it is returned without a list: everything not named for 1..jobs-1.
    A loader left with less than `min_share` of all rows gets nothing (loader 0 takes them)."""
    loads = [0] * max(1, jobs)
    named: list[list[tuple[str, str]]] = [[] for _ in loads]
    simple: list[tuple[int, str, str]] = []
    for key, rows in tables.items():
        m = _TABLE_KEY.match(key)
        if m and _SIMPLE_NAME.match(m.group(1)) and _SIMPLE_NAME.match(m.group(2)):
            simple.append((int(rows), m.group(1), m.group(2)))
        else:
            loads[0] += int(rows)
    for rows, schema, table in sorted(simple, key=lambda t: (-t[0], t[1], t[2])):
        i = min(range(len(loads)), key=lambda k: (loads[k], k))
        loads[i] += rows
        named[i].append((schema, table))
    total = sum(loads)
    for k in range(1, len(named)):
        if loads[k] < min_share * total:
            named[k] = []
    return [[] for _ in named[:1]] + named[1:]


def prefetch_dir(token: str) -> str:
    """The host's folder for a prefetch, as a shell word (both scripts expand it the same way)."""
    if not re.match(r"^[a-z0-9]{8,40}$", token):
        raise ValueError(f"prefetch token {token!r}")
    return f'"${{TMPDIR:-/tmp}}/flyops-prefetch-{token}"'


def _fetch_into_work(fetch_argv: list[str]) -> str:
    """Shell lines: restic writes $work/dump; its pid goes to fetch.pid, its exit status to
    fetch.rc and when it ended to fetch.end (written via rename, so a reader never sees half)."""
    return f"""\
{{ {shlex.join(fetch_argv)} > "$work/dump" 2> "$work/restic.err" & echo $! > "$work/fetch.pid.new"
  mv "$work/fetch.pid.new" "$work/fetch.pid"; wait $!; rc=$?
  echo "${{EPOCHREALTIME/,/.}}" > "$work/fetch.end"; echo "$rc" > "$work/fetch.rc.new"; mv "$work/fetch.rc.new" "$work/fetch.rc"
}} 2>/dev/null"""


#: seconds a finished prefetch keeps its file for the restore script that should claim it
PREFETCH_KEEP = 300


def prefetch_script(token: str, fetch_argv: list[str]) -> str:
    """Fetch a dump speculatively into `prefetch_dir(token)`, before its manifest is read, so
    that restic's key derivation and the first bytes overlap the manifest read and preflight.

    The folder is the lease: a restore script started with `prefetched=token` follows the
    growing file, claims the folder and removes it when done; whoever removes the folder
    (that script, or `cancel_prefetch_script`) stops the fetch if it still runs. A folder no
    script claimed within PREFETCH_KEEP seconds after the fetch ended is removed here."""
    return f"""\
work={prefetch_dir(token)}
mkdir -m 700 "$work" || exit 92
echo "${{EPOCHREALTIME/,/.}}" > "$work/fetch.t0"
: > "$work/dump" || exit 91
{_fetch_into_work(fetch_argv)} &
n=0; while [ ! -e "$work/fetch.pid" ] && [ "$n" -lt 300 ]; do sleep 0.01; n=$((n+1)); done
pid=$(cat "$work/fetch.pid" 2>/dev/null) || exit 93
while [ ! -e "$work/fetch.rc" ] && kill -0 "$pid" 2>/dev/null; do
  [ -d "$work" ] || kill "$pid" 2>/dev/null
  sleep 0.1
done
# a failed fetch nobody follows yet is given up at once: the restore then fetches exactly
if [ "$(cat "$work/fetch.rc" 2>/dev/null)" != 0 ] && [ ! -e "$work/claimed" ]; then rm -rf "$work"; exit 1; fi
n=0
while [ -d "$work" ] && [ ! -e "$work/claimed" ] && [ "$n" -lt {PREFETCH_KEEP * 10} ]; do sleep 0.1; n=$((n+1)); done
[ -e "$work/claimed" ] || rm -rf "$work"
wait
"""


def cancel_prefetch_script(token: str, *, started: bool = False) -> str:
    """Remove a prefetch's folder, which stops its fetch. Unless it is known to have `started`,
    wait up to 2 s for the folder to appear first (the prefetch runs in its own session)."""
    wait = "" if started else 'n=0; while [ ! -d "$work" ] && [ "$n" -lt 20 ]; do sleep 0.1; n=$((n+1)); done\n'
    return f'work={prefetch_dir(token)}\n{wait}rm -rf "$work"\n'


def restore_script(fetch_argv: list[str] | None, expected_bytes: int, restore_argv: list[str],
                   loaders: list[list[tuple[str, str]]] | None = None, expected_sha256: str | None = None, *,
                   prefetched: str | None = None) -> str:
    """Fetch the dump and load it at the same time, then finish from the complete local file.

    `restic dump` (`fetch_argv`) writes the temp file, or a prefetch already does
    (`prefetched`: the token of `prefetch_script`, whose folder this script claims and
    removes). Readers follow the growing file (`tail -f --pid`):
    `pg_restore -l` reads its table of contents while `--section=pre-data` creates the schema
    from its head (both at once); then one `--section=data` loader per entry of `loaders` runs concurrently,
    each skipping the others' tables (loader 0 takes everything not named for another). A
    custom archive restores from a stream in file order, so the big tables load in parallel
    while the rest of the file is still arriving. Once the fetch has ended and the file has the
    manifest's byte count, `pg_restore -j N --section=post-data` builds indexes and constraints
    in parallel from the file (parallel restore needs a seekable file).

    `db.restore` of an exact snapshot does not hash the fetched bytes again: restic checks
    every chunk against its SHA-256 id and MAC while it reads, and the manifest names the
    dump's snapshot, whose id chains to those chunk ids. A prefetch, which fetched "the newest
    dump" before the manifest said which one, and a drill do (`expected_sha256`): once the
    fetch has ended, the complete file is hashed from disk beside the data loaders (reniced;
    it must only be done before post-data), and post-data runs only when the whole stream's
    SHA-256 is the manifest's (prints sha256; rc_restore=sha when it differs). Hashing the file
    rather than following it as it grows saves a pipe: on this machine every pipe a 1.9 GiB
    dump goes through costs about 2 s of system CPU, which the server's COPY competes for
    (bench/results/restore_hash.md, pgbench scale 200 interleaved: data loaded 1.1 s sooner,
    the restore 0.95 s faster, 1 s less client CPU than when following). The cost is on a
    fetch slower than the loaders: post-data then waits for the hash (about 0.65 s per GiB
    with `openssl`). Any failure stops the fetch
    and leaves only the new database, which the caller drops; the target is never touched.
    Prints rc_fetch (noprefetch: the prefetch never started), bytes, rc_list, rc_pre, rc_data
    (first non-zero loader), rc_restore, and t_start (when the fetch started), t_toc,
    t_schema, t_fetched (when restic exited), t_data, t_hashed, t_post: when each phase ended
    (`phase_times`).
    """
    if (fetch_argv is None) == (prefetched is None):
        raise ValueError("restore_script: give exactly one of fetch_argv and prefetched")
    loaders = loaders or [[]]
    common = [a for a in restore_argv if not a.startswith("--jobs")]
    post_argv = [*restore_argv, "--section=post-data"]
    if prefetched:
        start = f"""\
work={prefetch_dir(prefetched)}
n=0; while [ ! -e "$work/fetch.pid" ] && [ "$n" -lt 300 ]; do sleep 0.1; n=$((n+1)); done
if [ ! -e "$work/fetch.pid" ]; then echo "rc_fetch=noprefetch"; rm -rf "$work"; exit 0; fi
: > "$work/claimed"
"""
    else:
        start = f"""\
work=$(mktemp -d "${{TMPDIR:-/tmp}}/flyops-restore.XXXXXX") || exit 90
echo "${{EPOCHREALTIME/,/.}}" > "$work/fetch.t0"
: > "$work/dump" || exit 91
{_fetch_into_work(fetch_argv or [])} &
n=0; while [ ! -e "$work/fetch.pid" ] && [ "$n" -lt 300 ]; do sleep 0.01; n=$((n+1)); done
"""
    lines = [start, """\
stop_fetch() { [ -e "$work/fetch.rc" ] || kill "$fetch_pid" 2>/dev/null; }
progress_pid=
trap 'stop_fetch; [ -z "$progress_pid" ] || kill "$progress_pid" 2>/dev/null; rm -rf "$work"' EXIT
trap 'exit 143' TERM INT HUP  # so that the EXIT trap runs when the session is ended (LocalHost, systemd)
fetch_pid=$(cat "$work/fetch.pid") || exit 93
phase() { echo "@flyops-progress phase=$1" >&2; }  # flyops.progress: for a terminal's status line
# the loop's `sleep` gets no stdout/stderr: killed mid-sleep, the loop would otherwise leave it
# holding the script's pipes, and the caller waits for their end (up to 0.5 s per restore)
{ while sleep 0.5 </dev/null >/dev/null 2>&1; do
    echo "@flyops-progress fetched=$(stat -c %s "$work/dump" 2>/dev/null || echo 0)" >&2; done; } &
progress_pid=$!
phase toc
echo "t_start=$(cat "$work/fetch.t0")"
follow() { tail -c +1 -s 0.1 --pid="$fetch_pid" -f "$work/dump"; }
wait_fetch() {  # until the fetch's status is written: restic has exited, then up to 5 s for the rename
  while [ ! -e "$work/fetch.rc" ] && kill -0 "$fetch_pid" 2>/dev/null; do sleep 0.05; done
  local n=0; while [ ! -e "$work/fetch.rc" ] && [ "$n" -lt 100 ]; do sleep 0.05; n=$((n+1)); done
}
expected_sha=; sha=
sha_matches() { [ -z "$expected_sha" ] || [ "$sha" = "$expected_sha" ]; }
"""]
    if expected_sha256:
        lines.append(SHA256_FUNCTION + f"""\
expected_sha={shlex.quote(expected_sha256)}
# the complete file, from disk (no pipe), once the fetch ended; at a lower priority than the
# loaders: the hash is needed only before post-data
( renice -n 10 -p "$BASHPID" >/dev/null 2>&1
  wait_fetch
  if [ "$(cat "$work/fetch.rc" 2>/dev/null)" = 0 ]; then sha256_of < "$work/dump" > "$work/sha"; fi
  echo "${{EPOCHREALTIME/,/.}}" > "$work/t.hashed" ) & sha_pid=$!
""")
    lines.append(f"""\
# the table of contents (for the loaders' lists) and the schema, both from the file's head, at once
{{ follow | {shlex.join([*common, "--section=pre-data"])} 2> "$work/pre.err"; echo "${{PIPESTATUS[1]}}" > "$work/rc.pre"
  echo "${{EPOCHREALTIME/,/.}}" > "$work/t.pre"; }} & pre_pid=$!
follow | {shlex.join([common[0], "--list"])} > "$work/toc" 2> "$work/pg_restore.err"; rc_list=${{PIPESTATUS[1]}}
echo "t_toc=${{EPOCHREALTIME/,/.}}"; phase schema
rc_pre=skipped; rc_data=skipped
wait "$pre_pid"  # a head --list cannot read fails pre-data too; a failed fetch ends both followers; cat "$work/pre.err" >> "$work/pg_restore.err" 2>/dev/null
if [ "$rc_list" = 0 ]; then
  rc_pre=$(cat "$work/rc.pre" 2>/dev/null || echo lost)
  echo "t_schema=$(cat "$work/t.pre")"; phase data
fi
: > "$work/others"
""")
    for i, tables in enumerate(loaders[1:], start=1):
        if not tables:
            continue
        pats = [f"^[0-9]+; [0-9]+ [0-9]+ TABLE DATA {schema} {table} " for schema, table in tables]
        lines.append(f"printf '%s\\n' {' '.join(shlex.quote(p) for p in pats)} > \"$work/pat.{i}\"\n"
                     f"grep -E -f \"$work/pat.{i}\" \"$work/toc\" > \"$work/list.{i}\"; "
                     f"cat \"$work/pat.{i}\" >> \"$work/others\"\n")
    lines.append(f"""\
if [ -s "$work/others" ]; then grep -v -E -f "$work/others" "$work/toc" > "$work/list.0"; else cp "$work/toc" "$work/list.0"; fi
load() {{  # load <n>: the data entries of list.<n>, from the growing file
  follow | {shlex.join([*common, "--section=data"])} --use-list="$work/list.$1" 2> "$work/data.$1.err"
  local rc=${{PIPESTATUS[1]}}
  echo "$rc" > "$work/rc.$1"
  [ "$rc" = 0 ] || stop_fetch
}}
if [ "$rc_pre" = 0 ]; then
  pids=()
  for list in "$work"/list.*; do
    n=${{list##*.}}
    [ "$n" = 0 ] || [ -s "$list" ] || continue
    load "$n" & pids+=($!)
  done
  wait "${{pids[@]}}"
  rc_data=0
  for f in "$work"/rc.*; do r=$(cat "$f"); [ "$r" = 0 ] || rc_data=$r; done
  cat "$work"/data.*.err >> "$work/pg_restore.err" 2>/dev/null
  echo "t_data=${{EPOCHREALTIME/,/.}}"
else
  stop_fetch
fi
wait_fetch
rc_fetch=$(cat "$work/fetch.rc" 2>/dev/null || echo lost)
echo "t_fetched=$(cat "$work/fetch.end" 2>/dev/null)"
bytes=$(stat -c %s "$work/dump")
[ -z "${{sha_pid:-}}" ] || {{ wait "$sha_pid"; sha=$(cat "$work/sha" 2>/dev/null); echo "sha256=$sha"
                             echo "t_hashed=$(cat "$work/t.hashed" 2>/dev/null)"; }}
echo "rc_fetch=$rc_fetch"
echo "bytes=$bytes"
echo "rc_list=$rc_list"
echo "rc_pre=$rc_pre"
echo "rc_data=$rc_data"
if [ "$rc_fetch" = 0 ] && [ "$bytes" = {int(expected_bytes)} ] && [ "$rc_data" = 0 ] && sha_matches; then
  phase post
  {shlex.join(post_argv)} "$work/dump" 2>> "$work/pg_restore.err"
  echo "rc_restore=$?"
  echo "t_post=${{EPOCHREALTIME/,/.}}"
elif [ "$rc_list" != 0 ]; then echo "rc_restore=$rc_list"
elif [ "$rc_pre" != 0 ]; then echo "rc_restore=$rc_pre"
elif [ "$rc_data" != 0 ]; then echo "rc_restore=$rc_data"
elif [ "$rc_fetch" = 0 ] && ! sha_matches; then echo "rc_restore=sha"
else echo "rc_restore=skipped"
fi
{{ echo "--- restic:"; tail -c 2000 "$work/restic.err"; echo "--- pg_restore:"; tail -c 3000 "$work/pg_restore.err" 2>/dev/null; }} >&2
""")
    return "".join(lines)


def manifest_restore_script(repo: Repo, dump_snapshot: str, manifest: Mapping, tools: Tools, db_url: Secret,
                            jobs: int, expected_sha256: str | None = None, *, prefetched: str | None = None,
                            no_owner: bool = False, no_acl: bool = False) -> str:
    """`restore_script` for a backup: its dump snapshot fetched with `repo` (or already being
    fetched by the prefetch `prefetched`), loaded into the database at `db_url` (password left
    out of argv: it travels as PGPASSWORD on stdin), its tables shared among loaders by the
    manifest's row counts. Used by `restore` and the drill."""
    fetch_argv = None if prefetched else repo.argv("dump", dump_snapshot, "/" + manifest["file"])
    return restore_script(fetch_argv, int(manifest["bytes"]),
                          pg_restore_argv(tools, pgconn.conninfo_without_password(db_url), jobs,
                                          no_owner=no_owner, no_acl=no_acl),
                          split_tables(manifest.get("tables", {}), jobs), expected_sha256=expected_sha256,
                          prefetched=prefetched)


class Prefetch:
    """A speculative fetch of a backup's dump (`prefetch_script`), started on the host before
    the manifest is read: restic's key derivation (about 0.7 s per restic process here) and
    the first bytes then overlap the manifest's own restic run, the preflight and CREATE
    DATABASE instead of following them (bench/results/restore.md).

    For `latest` it is speculative: it asks for the newest dump snapshot tagged with the
    environment before the manifest names the one that belongs to it, and a backup still
    running, or one killed between its dump and its manifest, leaves a newer dump. So the
    restore script checks the stream's SHA-256 against the manifest's before building any
    index (`expected_sha256`), and the caller redoes a miss from the exact snapshot (`missed`).
    For an id it is `exact`: the only dump tagged with that id is the one its manifest names
    (a backup id is new for every run, and a manifest is written only after its dump), so
    restic's own checks suffice, as for any restore of an exact snapshot (`restore_script`),
    and the hash (about 0.4 s here, bench/results/restore_structure.md) is not paid."""

    def __init__(self, repo: Repo, env: str, ref: str, include_pre_restore: bool = False):
        tag_args = latest_tag_args("dump", env, include_pre_restore) if ref == "latest" else \
            ["--tag", f"{TAG},part=dump,env={env},id={ref}"]
        self.host = repo.host
        self.token = secrets.token_hex(12)
        self.exact = ref != "latest"
        self.claimed = False
        repo.check_reachable()  # an unreachable S3 endpoint fails here, once, within its timeout
        script = prefetch_script(self.token, repo.argv("dump", *tag_args, "latest", "/" + DUMP_FILE))
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefetch")
        self._job = self._pool.submit(self.host.run_script, script, repo.config.secrets())

    def running(self) -> bool:
        """Whether its host script is still there to be claimed: it ends early only when the
        fetch could not start or failed, or when nobody claimed it in time."""
        return not self._job.done()

    @staticmethod
    def fits(manifest: Mapping) -> bool:
        """Whether the prefetch asked for this backup's file (backups before DUMP_FILE named it
        after the database, which is not known before the manifest is read)."""
        return manifest.get("file") == DUMP_FILE

    def expected_sha256(self, manifest: Mapping) -> str | None:
        """The hash a restore following this prefetch must check (None when it is exact)."""
        return None if self.exact else str(manifest["sha256"])

    @staticmethod
    def missed(out: Mapping[str, str], manifest: Mapping) -> bool:
        """Whether a restore that followed the prefetch must be redone from the exact snapshot:
        anything short of the manifest's bytes, its SHA-256 and a clean load."""
        return not (out.get("rc_fetch") == "0" and out.get("bytes") == str(manifest["bytes"])
                    and out.get("rc_restore") == "0")

    def close(self) -> None:
        """Stop the fetch if it still runs (a restore script that claimed it has removed its
        folder already, unless it was killed), and wait for the host script to end."""
        if not self._job.done():
            with contextlib.suppress(Exception):
                self.host.run_script(cancel_prefetch_script(self.token, started=self.claimed))
        with contextlib.suppress(Exception):
            self._job.result()
        self._pool.shutdown(wait=True)


PHASES = {"toc": "table of contents read", "schema": "schema created", "fetched": "fetch complete",
          "hashed": "stream hashed", "data": "data loaded", "post": "indexes and constraints built"}


def phase_times(out: Mapping[str, str]) -> dict[str, float]:
    """Seconds from the script's start to the end of each phase it reached (`t_*` lines)."""
    try:
        t0 = float(out["t_start"])
    except (KeyError, ValueError):
        return {}
    times = {}
    for key in PHASES:
        with contextlib.suppress(KeyError, ValueError):
            times[key] = round(float(out[f"t_{key}"]) - t0, 3)
    return times


def restore_timeline(phases: Mapping[str, float]) -> str:
    """One line for a terminal: 'schema at 0.8 s, fetch complete at 6.8 s, ...'."""
    marks = sorted((v, k) for k, v in phases.items() if k in PHASES and k != "toc")
    return ", ".join(f"{PHASES[k]} at {v:.1f} s" for v, k in marks)


def pg_restore_argv(tools: Tools, conninfo: str, jobs: int, *, no_owner: bool = False,
                    no_acl: bool = False) -> list[str]:
    """Owners and grants are restored unless asked otherwise (`--no-owner`: every object owned
    by the restoring role, so SECURITY DEFINER functions run with its rights; `--no-acl`: no
    GRANT/REVOKE, so roles lose their access and PUBLIC keeps EXECUTE on every function)."""
    flags = (["--no-owner"] if no_owner else []) + (["--no-acl"] if no_acl else [])
    return [tools.pg_restore, *flags, "--exit-on-error", f"--jobs={max(1, jobs)}", "--dbname", conninfo]


#: PostgreSQL's longest identifier in bytes (NAMEDATALEN - 1); longer ones are cut (scan.l
#: truncate_identifier), which could map a new database's name onto an existing one
NAME_MAX_BYTES = 63


def new_database_name(base: str, kind: str, when: datetime | None = None, token: str | None = None) -> str:
    """`<base>_<kind>_<yyyymmddhhmmss>_<4 hex>`, at most 63 bytes in UTF-8: `base` is cut at a
    character boundary to fit, so PostgreSQL never truncates it, and the random part keeps two
    runs in the same second apart."""
    stamp = (when or datetime.now(UTC)).strftime("%Y%m%d%H%M%S")
    suffix = f"_{kind}_{stamp}_{token or secrets.token_hex(2)}"
    room = NAME_MAX_BYTES - len(suffix.encode())
    if room < 1:
        raise ValueError(f"name suffix {suffix!r} leaves no room")
    name = base.encode()[:room].decode("utf-8", "ignore") + suffix
    assert len(name.encode()) <= NAME_MAX_BYTES
    return name


def database_error(e: psycopg.Error, doing: str) -> OpsError:
    """One readable error for a database failure (no traceback), with the fix where known."""
    msg = " ".join(str(e).split())[:500]
    if isinstance(e, psycopg.errors.InsufficientPrivilege):
        return PreconditionFailed(
            f"{doing}: {msg}",
            fix="restore as a role with CREATEDB (and CREATEROLE when the target lacks the backup's roles), "
                "e.g. the postgres superuser: pass --to with that role's URL, or `ALTER ROLE <role> CREATEDB`")
    if isinstance(e, psycopg.errors.InvalidParameterValue | psycopg.errors.FeatureNotSupported):
        return PreconditionFailed(f"{doing}: {msg}",
                                  fix="the target server lacks the backup's encoding or locale; install that locale "
                                      "(locales-all, or ICU) or restore onto a server that has it")
    return OpsError(f"{doing}: {msg}")


def _db_exists(conn, name: str) -> bool:
    return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is not None


def missing_extensions(conn, manifest: dict) -> list[str]:
    """Why the target cannot have the backup's extensions at their recorded versions."""
    return database.extension_problems(conn, manifest)


def restore(ref: str, *, env: str, repos: Mapping[str, RepoConfig], server_url: Secret,
            target_db: str | None = None, confirm: str | None = None, target_env: str | None = None,
            host: Host | None = None, tools: Tools = DEFAULT_TOOLS, jobs: int = 2,
            lock_dir: Path | None = None, prefetch: bool = True, no_owner: bool = False,
            no_acl: bool = False, include_pre_restore: bool = False) -> dict:
    """Restore `ref` onto the server at `server_url` (any database on it; used for admin SQL).

    Owners, grants, the database's settings, comment and ACL come back as recorded; roles the
    target lacks are created from the backup first (`roles_created` in the result).
    no_owner / no_acl: pg_restore's flags of the same name (see `pg_restore_argv`).

    target_db=None: a new database `<db>_restore_<ts>` (safe default, nothing is replaced).
    target_db=<name> that exists: replaced only when confirm == name; a pinned pre-restore
    backup of it goes to `repos[target_env]` first and the old database stays as `<name>_pre_<ts>`.
    prefetch=False: start the dump's fetch only once the manifest is read (what backups from
    before DUMP_FILE get anyway); the benchmark compares the two.
    include_pre_restore: let `latest` be a pinned pre-restore backup (by default it is the
    newest backup of the database as it was, not the state a restore just replaced).
    """
    host = host or LocalHost()
    with host.reach(server_url) as session_url:
        try:
            return _restore(ref, env=env, repos=repos, server_url=server_url, session_url=session_url,
                            target_db=target_db, confirm=confirm, target_env=target_env, host=host, tools=tools,
                            jobs=jobs, lock_dir=lock_dir, prefetch=prefetch, no_owner=no_owner, no_acl=no_acl,
                            include_pre_restore=include_pre_restore)
        except psycopg.Error as e:
            raise database_error(e, f"restore onto {pgconn.display(server_url)} failed") from None


def _restore(ref: str, *, env: str, repos: Mapping[str, RepoConfig], server_url: Secret, session_url: Secret,
             target_db: str | None, confirm: str | None, target_env: str | None, host: Host, tools: Tools,
             jobs: int, lock_dir: Path | None, prefetch: bool, no_owner: bool, no_acl: bool,
             include_pre_restore: bool = False) -> dict:
    """`restore` once the server is reachable from here at `session_url` (admin SQL, checks)
    and from the host at `server_url` (pg_restore, the pre-restore pg_dump)."""
    target_env = target_env or env
    src_env, backup_ref = parse_ref(ref, env)
    if src_env not in repos:
        raise BadInput(f"{ref}: no repository configured for environment {src_env!r}")
    repo = Repo(repos[src_env], host, tools)
    now = datetime.now(UTC)
    admin = pgconn.connect(session_url)
    new_db: str | None = None  # set only once this run's CREATE DATABASE succeeded: the only drop
    speculative: Prefetch | None = None
    try:
        live = target_db is not None and _db_exists(admin, target_db)
        if prefetch and not live:  # a live target gets a pre-restore backup first: nothing to overlap
            speculative = Prefetch(repo, src_env, backup_ref, include_pre_restore)
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="version") as pool:
            version = pool.submit(client_version, host, tools.pg_restore)  # beside the manifest's restic run
            # without restic's lock (fetch_manifest): nothing is changed before the manifest is read,
            # and the dump's own fetch keeps its lock, so a prune still cannot run under the long read
            dump_snapshot, manifest = fetch_manifest(repo, src_env, backup_ref, include_pre_restore=include_pre_restore,
                                                     lock=False)
        if speculative is not None and not speculative.fits(manifest):
            speculative.close()
            speculative = None

        # -- preflight: nothing on the target changes before all of these pass ----------------
        if live and confirm != target_db:
            raise PreconditionFailed(
                f"refusing to restore over the live database {target_db!r} without confirmation",
                fix=f"pass --confirm {target_db} (the target database name), or restore into a new database")
        missing = missing_extensions(admin, manifest)
        if missing:
            raise PreconditionFailed(
                f"backup {manifest['id']} needs extensions at versions the target server cannot create: "
                f"{'; '.join(missing)}",
                fix="install them on the target (e.g. postgresql-contrib of the backup's major, which ships every "
                    "older version's script), or update the extension on the source and take a new backup")
        restore_major, _ = version.result()
        dump_major = int(str(manifest.get("pg_dump_version", "0")).split(".")[0] or 0)
        check_versions(restore_major, dump_major * 10000, tool="pg_restore")
        server_major = int(admin.execute("SHOW server_version_num").fetchone()[0]) // 10000
        if server_major < manifest["server_version_num"] // 10000:
            raise PreconditionFailed(
                f"target server {server_major} is older than the backup's server "
                f"{manifest['server_version_num'] // 10000}; a dump does not restore downwards reliably",
                fix="restore onto a server of the same or a newer major version")
        if live and target_env not in repos:
            raise PreconditionFailed(f"no repository for {target_env!r} to hold the pre-restore backup")

        pre_restore = None
        if live:
            pre_restore = backup(BackupSource(pgconn.with_dbname(server_url, target_db), target_env),
                                 repos[target_env], host=host, kind="pre-restore", pinned=True, tools=tools,
                                 reason=f"before restoring {src_env}::{manifest['id']}", lock_dir=lock_dir)

        # -- restore into a new database ------------------------------------------------------
        base = target_db or manifest["database"]
        name = new_database_name(base, "restore", now)
        new_url = pgconn.with_dbname(server_url, name)  # as the host reaches it (pg_restore)
        new_session = pgconn.with_dbname(session_url, name)  # as this process reaches it
        secrets_ = {**repos[src_env].secrets(), **pgconn.libpq_secrets(server_url)}
        roles_created = [] if (no_owner and no_acl) else database.create_missing_roles(admin, manifest.get("roles"))
        server_num = int(admin.execute("SHOW server_version_num").fetchone()[0])
        create = database.create_database_sql(name, manifest.get("database_properties"), owner=not no_owner,
                                              server_num=server_num)
        admin.execute(create)
        new_db = name  # ours from here on
        _create_database(new_session, manifest)
        if speculative is not None and not speculative.running():  # it failed, or gave its file up
            speculative.close()
            speculative = None
        if speculative is not None:
            speculative.claimed = True  # the script claims the prefetch's folder (and removes it) from here on
            script = manifest_restore_script(repo, dump_snapshot, manifest, tools, new_url, jobs,
                                             speculative.expected_sha256(manifest), prefetched=speculative.token,
                                             no_owner=no_owner, no_acl=no_acl)
            out, r = _run_restore(host, script, secrets_)
            if Prefetch.missed(out, manifest):  # a newer dump without a manifest, or a failure: once more, exactly
                admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(new_db)))
                new_db = None
                admin.execute(create)
                new_db = name
                _create_database(new_session, manifest)
                speculative.close()
                speculative = None
        if speculative is None:
            out, r = _run_restore(host, manifest_restore_script(repo, dump_snapshot, manifest, tools, new_url, jobs,
                                                                no_owner=no_owner, no_acl=no_acl), secrets_)
        tail = "\n".join(r.stderr.strip().splitlines()[-10:])
        if out.get("rc_fetch") != "0" and out.get("rc_fetch") != "143":  # 143: stopped after a loader failed
            raise OpsError(f"could not fetch backup {manifest['id']} from {repo.location} on {host.name}:\n{tail}")
        if out.get("rc_fetch") == "0" and out.get("bytes") != str(manifest["bytes"]):
            raise VerificationFailed(f"backup {manifest['id']}: fetched {out.get('bytes')} bytes, "
                                     f"the manifest says {manifest['bytes']}")
        if out.get("rc_restore") != "0":
            raise OpsError(f"pg_restore into {new_db} failed (exit {out.get('rc_restore')}); "
                           f"the target was not touched:\n{tail}")

        report(host, phase="analyze")
        if target_env != manifest["environment"]:
            with pgconn.connect(new_session) as c:
                _fix_rails_environment(c, target_env)
        analyze_in_parallel(new_session, jobs)
        # settings, ACL and connection limit last: a recorded statement_timeout must not get in
        # the way of the restore's own statements
        not_applied = database.finish_database(admin, new_db, manifest.get("database_properties"), acl=not no_acl)

        result = {"backup_id": manifest["id"], "source_env": src_env, "database": new_db,
                  "previous_database": None, "pre_restore_backup": pre_restore["id"] if pre_restore else None,
                  "manifest": manifest, "phases": phase_times(out), "prefetched": speculative is not None,
                  "stream_sha256": out.get("sha256"),  # set when the stream was hashed (a `latest` prefetch)
                  "roles_created": roles_created, "owners_kept": not no_owner, "grants_kept": not no_acl,
                  "not_applied": not_applied}
        restored, new_db = new_db, None  # from here on the restored copy is kept, even if the swap fails
        if target_db is not None:
            old = new_database_name(target_db, "pre", now) if live else None
            _swap(admin, target_db, restored, old)
            result.update(database=target_db, previous_database=old)
        return result
    finally:
        if speculative is not None:
            speculative.close()
        if new_db is not None:  # failed part-way: drop the half-restored database, never the target
            with contextlib.suppress(Exception):
                admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(new_db)))
        admin.close()


def _create_database(session_url: Secret, manifest: Mapping) -> None:
    """The manifest's public-schema extensions, at their versions, in the new empty database."""
    with pgconn.connect(session_url) as c:
        database.create_extensions(c, manifest)


def _run_restore(host: Host, script: str, secrets_: Mapping[str, Secret]):
    r = host.run_script(script, secrets_)
    return parse_kv(r.stdout), r


#: every relation a plain `ANALYZE` processes: tables, materialized views, partitioned tables
#: (ANALYZE with no list: "every table and materialized view in the current database"; foreign
#: tables only when named), largest first so the longest one starts first
_ANALYZE_ORDER = """
SELECT c.oid::regclass::text FROM pg_class c
WHERE c.relkind IN ('r', 'm', 'p') AND c.relpersistence <> 't'
ORDER BY pg_total_relation_size(c.oid) DESC, 1
"""


def analyze_in_parallel(session_url: Secret, jobs: int) -> None:
    """ANALYZE the restored database with up to `jobs` sessions at once (the restore's -j
    budget), one relation per statement, largest first: a plain ANALYZE works through the
    tables one after the other on one core. The same relations as a plain ANALYZE, catalogs
    included."""
    with pgconn.connect(session_url) as c:
        names = [r[0] for r in c.execute(_ANALYZE_ORDER).fetchall()]
        if jobs <= 1 or len(names) < 2:
            c.execute("ANALYZE")
            return
    pending = list(reversed(names))  # pop() takes the largest first
    guard = threading.Lock()

    def worker() -> None:
        with pgconn.connect(session_url) as conn:
            while True:
                with guard:
                    if not pending:
                        return
                    name = pending.pop()
                conn.execute(sql.SQL("ANALYZE {}").format(sql.SQL(name)))  # regclass::text: already quoted

    with ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="analyze") as pool:
        for f in [pool.submit(worker) for _ in range(min(jobs, len(names)))]:
            f.result()


def _fix_rails_environment(conn, target_env: str) -> None:
    """A production dump in staging keeps ar_internal_metadata.environment=production, and Rails
    then refuses db:* tasks; set it to the environment it now lives in."""
    if conn.execute("SELECT to_regclass('public.ar_internal_metadata')").fetchone()[0]:
        conn.execute("UPDATE public.ar_internal_metadata SET value = %s WHERE key = 'environment'", (target_env,))


def _swap(admin, target: str, new: str, old: str | None) -> None:
    """Rename new → target (and target → old), after terminating the target's connections."""
    ident = sql.Identifier
    for _attempt in range(5):  # clients may reconnect between terminate and rename
        try:
            if old:
                admin.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(ident(target)))
                admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                              "WHERE datname = %s AND pid <> pg_backend_pid()", (target,))
            with admin.transaction():
                if old:
                    admin.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(ident(target), ident(old)))
                admin.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(ident(new), ident(target)))
            if old:
                admin.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(ident(old)))
            return
        except Exception as e:  # noqa: BLE001
            last = e
    if old:
        with contextlib.suppress(Exception):
            admin.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(ident(target)))
    raise OpsError(f"could not swap {new} into place as {target}: {last}",
                   fix=f"the restored copy is in {new}; rename it by hand once clients are stopped")
