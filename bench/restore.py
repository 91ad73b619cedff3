"""Benchmark: our `restore()` against bare `createdb` + `pg_restore -j 2` + `ANALYZE` from a local file, side by side.

    .venv/bin/python bench/restore.py                          # recorded: pgbench scale 50
    .venv/bin/python bench/restore.py --scale 200 --runs 3 --lean   # recorded: restore_scale200.md
    .venv/bin/python bench/restore.py --dataset pgbench+text   # recorded: + 3 M rows of hex text
    .venv/bin/python bench/restore.py --scale 5                # quick smoke run

Ours = `flyops.db.restore.restore("latest", ...)` into a new database: read the manifest (one
`restic dump`), then `restic dump` of the dump writes a local temp file that `pg_restore`
readers follow as it grows: the table of contents, pre-data, then the data loaders (up to
`--jobs`, the largest tables on different loaders by the manifest's row counts; a loader is
started only for at least 10 % of the rows, so pgbench's dump has one); once the file is
complete with the manifest's byte count, `pg_restore -j 2 --section=post-data` from the file;
then ANALYZE with up to `--jobs` sessions, one relation each, largest first; then the
database's recorded settings. Owners and grants are kept (restore()'s default since issue 12), so
bare keeps them too: `--exit-on-error` without `--no-owner --no-acl`, which would skip the
ALTER ... OWNER and GRANT statements ours runs. Its CREATE DATABASE is inside `restore()`, so in its time.
Bare (the baseline of the ratio) = what a person runs by hand, all timed: `createdb`, then
`pg_restore --exit-on-error -j 2` from a local `pg_dump -Fc -Z0` file of the same
database, then `psql -c ANALYZE`. Goal: <= 1.15x.
Context rows: bare `pg_restore -j 2` alone (into a database created untimed), the same from a
default (gzip) `pg_dump -Fc` file, the fetch on its own (what ours overlaps with loading the
data), ours with a single-session ANALYZE (as before the parallel one), and a control: ours
with the dump's `restic dump` replaced by `cat` of the same bytes (what the fetch's restic
process costs), and bare with `--no-owner --no-acl` (the baseline before owners and grants were
kept). `--lean` runs only bare, bare alone, that one and ours (for large scales).
"""

from __future__ import annotations

import shlex
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as c  # noqa: E402

NAME = "restore"
GOAL = 1.15
FLAGS = ["--exit-on-error", "--jobs=2"]  # owners and grants kept, as ours keeps them
LESS = ["--no-owner", "--no-acl"]  # the old baseline's flags: no ALTER OWNER, no GRANT/REVOKE


def main() -> None:
    c.main_with_cluster(NAME, __doc__.splitlines()[0], run,
                        extra=lambda p: p.add_argument("--lean", action="store_true",
                                                       help="only bare, bare pg_restore alone and ours"))


def run(args, pg, work: Path) -> None:
    import flyops.db.restore as restore_module
    from flyops.db.backup import backup
    from flyops.db.config import BackupSource, Tools
    from flyops.db.restore import PHASES, restore

    facts = c.machine_facts(pg)
    db = "bench"
    c.create_pgbench_db(pg, db, args.scale, args.dataset)
    size = c.db_size(pg, db)
    repo = work / "repo"
    c.restic_init(repo)
    lock_dir = work / "locks"
    c.log("backup (untimed) ...")
    manifest = backup(BackupSource(pg.url(db), c.BENCH_ENV), c.repo_config(repo), lock_dir=lock_dir)
    z0, gz = work / "z0.dump", work / "gz.dump"
    c.pg_dump_file(pg, db, z0, "-Z0")
    c.pg_dump_file(pg, db, gz)
    counter = iter(range(10_000))
    analyze: list[float] = []
    parts: dict[str, list[float]] = {"restic dump > file (the fetch, alone)": []}
    phases: dict[str, list[float]] = {}

    def bare(path: Path, with_analyze: bool = False):
        return lambda: c.timed_restore(pg, f"bare_{next(counter)}", lambda ci: ["pg_restore", *FLAGS, "-d", ci, str(path)],
                                       analyze if with_analyze else None)

    parallel_analyze = restore_module.analyze_in_parallel

    def single_analyze(url, jobs):  # the control: one ANALYZE on one session, as before
        return parallel_analyze(url, 1)

    def ours(tools: Tools | None = None, prefetch: bool = True, one_analyze: bool = False):
        def go() -> float:
            restore_module.analyze_in_parallel = single_analyze if one_analyze else parallel_analyze
            try:
                with c.stopwatch() as t:
                    r = restore("latest", env=c.BENCH_ENV, repos={c.BENCH_ENV: c.repo_config(repo)},
                                server_url=pg.url(), jobs=2, lock_dir=lock_dir, tools=tools or Tools(),
                                prefetch=prefetch)
            finally:
                restore_module.analyze_in_parallel = parallel_analyze
            c.drop_db(pg, r["database"])
            assert r["prefetched"] is prefetch
            if tools is None and prefetch and not one_analyze:
                for k, v in r["phases"].items():
                    phases.setdefault(k, []).append(v)
            return t[0]
        return go

    # Control: the same restore() with the dump's `restic dump` replaced by `cat` of the very bytes
    # it returns (fetched once, untimed); the manifest is still read with restic. Ours minus this
    # is what the fetch's restic process costs, key derivation and CPU together.
    fetched = work / "fetched-once.dump"
    c.run(["bash", "-c", shlex.join(["restic", "--repo", str(repo), "--no-cache", "dump", manifest["restic_snapshot"],
                                     "/" + manifest["file"]]) + f" > {shlex.quote(str(fetched))}"], env=c.restic_env())
    real_restic = shutil.which("restic") or "restic"
    cat_restic = work / "restic-dump-is-cat"
    cat_restic.write_text(f'#!/bin/bash\nif [[ " $* " == *" dump "* && "$*" != *manifest.json* ]]; then\n'
                          f'  exec cat {shlex.quote(str(fetched))}\nfi\nexec {shlex.quote(real_restic)} "$@"\n')
    cat_restic.chmod(0o755)

    def fetch_parts() -> float:
        out = work / "fetched.dump"
        fetch = shlex.join(["restic", "--repo", str(repo), "--no-cache", "dump", manifest["restic_snapshot"],
                            "/" + manifest["file"]])
        with c.stopwatch() as t:
            c.run(["bash", "-c", f"{fetch} > {shlex.quote(str(out))}"], env=c.restic_env())
        out.unlink()
        parts["restic dump > file (the fetch, alone)"].append(t[0])
        return t[0]

    c.log("warm-up (untimed)")
    bare(z0)()

    full = "bare: `createdb` + `pg_restore -j 2` (-Z0 file) + ANALYZE"
    alone = "bare `pg_restore -j 2` (-Z0 file) alone, into a database created untimed"
    variants = {
        full: lambda: c.timed_full_restore(pg, f"bare_{next(counter)}",
                                           lambda ci: ["pg_restore", *FLAGS, "-d", ci, str(z0)]),
        "ours `restore()`": ours(),
        alone: bare(z0, with_analyze=True),
        "bare as before: `createdb` + `pg_restore --no-owner --no-acl -j 2` + ANALYZE":
            lambda: c.timed_full_restore(pg, f"bare_{next(counter)}",
                                         lambda ci: ["pg_restore", *LESS, *FLAGS, "-d", ci, str(z0)]),
    }
    if not args.lean:
        variants.update({
            "ours with a single-session ANALYZE (before this change)": ours(one_analyze=True),
            "ours without the prefetch (fetch starts after the manifest is read)": ours(prefetch=False),
            "control: ours with the fetch's restic replaced by `cat`": ours(Tools(restic=str(cat_restic))),
            "bare `pg_restore -j 2` (gzip file) alone": bare(gz),
            "fetch only (restic dump > file)": fetch_parts,
        })
    res = c.interleave(args.runs, variants, settle=lambda: c.settle(pg))
    base = res[full]
    an = c.Samples(analyze)
    r = res["ours `restore()`"].median / base.median
    r_alone = res["ours `restore()`"].median / res[alone].median
    load = Path("/proc/loadavg").read_text().split()[:3]

    rows = []
    for name, s in res.items():
        cpu = f"{s.cpu_median:.2f}" if s.cpu_median is not None else "—"
        rows.append([name, f"{s.median:.2f}", f"{s.min:.2f}", s.all(), c.ratio(s.median, base.median),
                     c.ratio(s.min, base.min), cpu])
    part_rows = [[k, f"{c.Samples(v).median:.2f}", c.Samples(v).all()] for k, v in parts.items() if v]  # --lean: none
    part_rows.append(["ANALYZE of the restored database", f"{an.median:.2f}", an.all()])
    phase_rows = [[PHASES[k], f"{c.Samples(v).median:.2f}", c.Samples(v).all()] for k, v in phases.items()]
    verdict = "met" if r <= GOAL else "missed"
    body = f"""
Our `restore()` (new database; the dump's `restic dump` started beside the manifest's and checked against its
SHA-256; data loaders following the file it writes, one for pgbench, post-data with `-j 2`
from the complete file, ANALYZE with 2 sessions) against what a person runs by hand, all
timed: `createdb`, `pg_restore --exit-on-error -j 2` (owners and grants kept, as ours) from a local
`pg_dump -Fc -Z0` file, `psql -c ANALYZE`; on {c.dataset_label(args)} ({size} on disk; dump
{c.mib(manifest['bytes'])}, gzip dump {c.mib(gz.stat().st_size)}). {args.runs} runs per variant,
interleaved ABBA; seconds of wall time. Load average (`uptime`) at the start: {facts['load average at start']},
after the runs: {' '.join(load)} (2 cores shared with other work: see the analysis).

**Result: ours / bare (`createdb` + `pg_restore -j 2` + ANALYZE) = {r:.2f}× (median), goal ≤ {GOAL}× — {verdict}.**
Against `pg_restore -j 2` alone (no createdb, no ANALYZE): {r_alone:.2f}×.

{c.md_table(["variant", "median s", "min s", "all runs s", "ratio (median)", "ratio (min)",
             "client CPU s (median)"], rows)}

### The parts ours adds, on their own

Measured in the same run (median of {args.runs}); ours overlaps the fetch with loading the data:

{c.md_table(["part", "median s", "all runs s"], part_rows)}

### Ours, phase by phase

Seconds from the start of the dump's fetch (which begins while the manifest is read, before
the new database is created) to the end of each phase, as `restore()` reports them in `phases`:

{c.md_table(["phase ended", "median s", "all runs s"], phase_rows)}

* {c.drop_caches_note()}
"""
    c.write_results(NAME, args, f"Restore benchmark ({c.dataset_label(args)})", body, facts)


if __name__ == "__main__":
    main()
