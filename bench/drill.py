"""Benchmark: `run_drill()` wall time on a pgbench database, split by phase.

    .venv/bin/python bench/drill.py              # recorded run: pgbench scale 50
    .venv/bin/python bench/drill.py --scale 5    # quick smoke run

Seeds a source scratch cluster with `pgbench -i -s N`, takes one `backup()` into a local
restic repository (untimed), then runs `flyops.db.drill.run_drill(target=LocalTarget())`
`--runs` times: each drill provisions its own throwaway cluster (initdb + start), restores
the way `db.restore` does (`restic dump` to a file the pg_restore loaders follow as it grows,
a reader hashing it against the manifest's SHA-256, post-data `-j 2` + ANALYZE), verifies
(exact row counts etc. against the manifest) and tears down. Side by side, interleaved,
the bare equivalent: start a fresh scratch cluster and `pg_restore -j 2` a local
`pg_dump -Fc -Z0` file into it (no fetch, no hash, no ANALYZE, no verification).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as c  # noqa: E402

NAME = "drill"
PHASES = ("provision", "restore", "verify", "teardown")


def main() -> None:
    c.main_with_cluster(NAME, __doc__.splitlines()[0], run)


def run(args, pg, work: Path) -> None:
    from flyops.db.backup import backup
    from flyops.db.config import BackupSource
    from flyops.db.drill import LocalTarget, run_drill
    from flyops.db.scratch import ScratchCluster

    facts = c.machine_facts(pg)
    db = "bench"
    c.create_pgbench_db(pg, db, args.scale)
    size = c.db_size(pg, db)
    repo = work / "repo"
    c.restic_init(repo)
    c.log("backup (untimed) ...")
    manifest = backup(BackupSource(pg.url(db), c.BENCH_ENV), c.repo_config(repo), lock_dir=work / "locks")
    z0 = work / "z0.dump"
    c.pg_dump_file(pg, db, z0, "-Z0")
    results = []
    bare_parts: dict[str, list[float]] = {"start cluster": [], "pg_restore -j 2": []}
    counter = iter(range(1000))

    def drill() -> float:
        i = next(counter)
        with c.stopwatch() as t:
            r = run_drill(env=c.BENCH_ENV, repo_config=c.repo_config(repo), backup="latest", target=LocalTarget(),
                          jobs=2, report_base=work / "reports" / f"drill-{i}", record=False, work_dir=work)
        if r.outcome != "passed":
            raise SystemExit(f"drill {r.outcome}: {r.error}")
        results.append({"wall": t[0], "rto": r.rto_measured, "summary": r.summary(),
                        "phases": {p.name: p.seconds for p in r.phases},
                        "rows": r.restored.get("rows"), "tables": r.restored.get("tables")})
        return r.rto_measured or 0.0

    def bare() -> float:
        cl = ScratchCluster(settings=c.SERVER_SETTINGS)
        try:
            with c.stopwatch() as t0:
                cl.start()
            with c.stopwatch() as t1:
                cl.psql('CREATE DATABASE "bare" TEMPLATE template0')
                c.run(["pg_restore", "--no-owner", "--no-acl", "--exit-on-error", "--jobs=2", "-d",
                       c.conninfo(cl, "bare"), str(z0)], env=c.tool_env(cl))
        finally:
            cl.stop()
        bare_parts["start cluster"].append(t0[0])
        bare_parts["pg_restore -j 2"].append(t1[0])
        return t0[0] + t1[0]

    res = c.interleave(args.runs, {"bare: new cluster + `pg_restore -j 2`": bare, "ours `run_drill()` RTO": drill})
    b, o = res["bare: new cluster + `pg_restore -j 2`"], res["ours `run_drill()` RTO"]

    rows = []
    for ph in PHASES:
        vals = c.Samples([r["phases"].get(ph, 0.0) for r in results])
        share = vals.median / o.median * 100 if ph != "teardown" else None
        rows.append([ph, f"{vals.median:.2f}", f"{vals.min:.2f}", vals.all(), f"{share:.0f}%" if share else "outside RTO"])
    rows.append(["**RTO (provision → verify)**", f"{o.median:.2f}", f"{o.min:.2f}", o.all(), "100%"])
    wall = c.Samples([r["wall"] for r in results])
    rows.append(["whole `run_drill()` call (select, phases, teardown, reports)", f"{wall.median:.2f}",
                 f"{wall.min:.2f}", wall.all(), ""])
    bare_rows = [[k, f"{c.Samples(v).median:.2f}", c.Samples(v).all()] for k, v in bare_parts.items()]
    bare_rows.append(["**total**", f"{b.median:.2f}", b.all()])
    last = results[-1]
    body = f"""
`run_drill(target=LocalTarget(), jobs=2)` on a backup of a pgbench database at scale {args.scale}
({size} on disk, dump {c.mib(manifest['bytes'])}, {last['rows']:,} rows in {last['tables']} tables checked
exactly against the manifest). {args.runs} drills, interleaved ABBA with the bare equivalent;
seconds of wall time (the drill's own `time.monotonic()` phase timings).

**Drill RTO median {o.median:.2f}s (min {o.min:.2f}s); bare new cluster + `pg_restore -j 2` from a
local file {b.median:.2f}s; ratio {o.median / b.median:.2f}× (min/min {o.min / b.min:.2f}×).**

{c.md_table(["phase", "median s", "min s", "all runs s", "share of RTO"], rows)}

Bare equivalent (no fetch, no SHA-256, no ANALYZE, no verification):

{c.md_table(["part", "median s", "all runs s"], bare_rows)}

Last drill: {last['summary']}.

* The RPO a drill reports is the age of the backup at drill start; here the benchmark took the
  backup a few minutes before the drills, so it is not meaningful and not analysed.
* {c.drop_caches_note()}
"""
    c.write_results(NAME, args, f"Drill benchmark (pgbench scale {args.scale})", body, facts)


if __name__ == "__main__":
    main()
