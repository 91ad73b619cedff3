"""Where `backup()` spends its time: each stage of the pipeline on its own, same dump.

    .venv/bin/python bench/backup_profile.py              # pgbench scale 50
    .venv/bin/python bench/backup_profile.py --scale 5    # smoke run

Not a ratio benchmark: a breakdown that explains `bench/results/backup.md`. Dumps the pgbench
database once (`pg_dump -Fc -Z0` to a file), then times, interleaved, wall and client CPU of:
pg_dump alone, `restic backup --stdin` with `auto` (what backup() uses) and `off`
compression, the side car of backup()'s pipeline (tee into sha256sum and wc -c through FIFOs),
sha256sum alone, opening the repository (`restic cat config`: scrypt key derivation, paid by
every restic invocation) and the manifest's exact row counts. Written to
`bench/results/backup_profile.md`.
"""

from __future__ import annotations

import shlex
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as c  # noqa: E402

NAME = "backup_profile"


def main() -> None:
    c.main_with_cluster(NAME, __doc__.splitlines()[0], run)


def run(args, pg, work: Path) -> None:
    from flyops.db import pgconn
    from flyops.db.manifest import database_facts

    facts = c.machine_facts(pg)
    db = "bench"
    c.create_pgbench_db(pg, db, args.scale)
    dump = work / "z0.dump"
    c.pg_dump_file(pg, db, dump, "-Z0")
    renv = {**c.restic_env(), **c.tool_env(pg)}
    q = shlex.quote

    def sh(script: str):
        def go() -> float:
            with c.stopwatch() as t:
                c.run(["bash", "-c", "set -eo pipefail\n" + script], env=renv)
            return t[0]
        return go

    def restic_stdin(mode: str):
        def go() -> float:
            repo = work / f"repo-{mode}"
            c.restic_init(repo)
            with c.stopwatch() as t:
                c.run(["bash", "-c", f"restic --repo {q(str(repo))} --no-cache backup --stdin --stdin-filename x.dump "
                       f"--compression {mode} --quiet < {q(str(dump))}"], env=renv)
            shutil.rmtree(repo)
            return t[0]
        return go

    open_repo = work / "repo-open"
    c.restic_init(open_repo)

    def row_counts() -> float:
        with pgconn.connect(pg.url(db)) as conn, c.stopwatch() as t:
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            database_facts(conn)
            conn.execute("COMMIT")
        return t[0]

    sidecar = (f"d=$(mktemp -d); mkfifo $d/a $d/b; sha256sum < $d/a > /dev/null & wc -c < $d/b > /dev/null & "
               f"tee $d/a $d/b < {q(str(dump))} > /dev/null; wait; rm -rf $d")
    variants = {
        "`pg_dump -Fc -Z0 > /dev/null`": sh(shlex.join(["pg_dump", "-Fc", "-Z0", "-d", c.conninfo(pg, db)])
                                            + " > /dev/null"),
        "`restic backup --stdin` (compression auto) < file": restic_stdin("auto"),
        "`restic backup --stdin` (compression off) < file": restic_stdin("off"),
        "tee → sha256sum + wc -c (FIFOs) < file": sh(sidecar),
        "`sha256sum` < file": sh(f"sha256sum < {q(str(dump))} > /dev/null"),
        "`restic cat config` (open repo: scrypt KDF)": sh(f"restic --repo {q(str(open_repo))} --no-cache cat config "
                                                           "> /dev/null"),
        "manifest facts: exact row counts in one snapshot": row_counts,
    }
    res = c.interleave(args.runs, variants)
    rows = [[n, f"{s.median:.2f}", f"{s.min:.2f}", f"{s.cpu_median:.2f}" if s.cpu_median is not None else "—",
             f"{dump.stat().st_size / s.median / 2**20:,.0f}" if "file" in n or "pg_dump" in n else "—"]
            for n, s in res.items()]
    body = f"""
Each stage of `backup()`'s pipeline on its own, on the same `pg_dump -Fc -Z0` file
({c.mib(dump.stat().st_size)}) of a pgbench database at scale {args.scale}, from the page cache.
{args.runs} runs each, interleaved. Client CPU = user+sys of the processes started (not the
PostgreSQL server); the row counts are server work (one `count(*)` per table).

{c.md_table(["stage", "median wall s", "min wall s", "client CPU s (median)", "MiB/s (wall)"], rows)}

In `backup()` these run concurrently on 2 cores (pg_dump | tee | restic, with sha256sum and
wc on FIFOs), then the manifest is stored by a second `restic backup` (another repository
open), and `restic cat config` runs first to see whether the repository exists. The CPU
column adds up to roughly the CPU of one `backup()` in `results/backup.md`; on 2 cores the
wall time cannot drop below about half of it.

This CPU has AES-NI and AVX2 but no SHA extensions (`sha_ni`), so every SHA-256 pass over the
stream (restic's chunk ids, and our whole-dump `sha256sum`) is expensive: see the `sha256sum` row.
"""
    c.write_results(NAME, args, f"Backup profile: where the time goes (pgbench scale {args.scale})", body, facts)


if __name__ == "__main__":
    main()
