"""Benchmark: our `restore()` with this checkout's restore script against the script of an earlier commit, interleaved.

    .venv/bin/python bench/restore_ab.py --before 0e1aa22 --scale 200   # recorded: restore_hash.md

For a change to the shell pipeline of `flyops.db.restore.restore_script` (how the dump is
fetched, followed, hashed), which is too small against the run-to-run noise of this machine
(about 1.5 s at pgbench scale 200) to be seen across two separate benchmark runs. Both sides
are the same `restore("latest", ...)` of the same backup on the same scratch cluster; only
`restore_script` differs: "before" is the function of `--before`'s `flyops/db/restore.py`
(`git show`), imported beside this checkout's. Runs are interleaved ABBA, with a CHECKPOINT and
a sync before each. Prints and records wall seconds and the phases `restore()` reports.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as c  # noqa: E402

NAME = "restore_ab"
ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    c.main_with_cluster(NAME, __doc__.splitlines()[0], run,
                        extra=lambda p: p.add_argument("--before", required=True,
                                                       help="the commit whose restore_script is the 'before' side"))


def _script_of(commit: str, work: Path):
    text = subprocess.run(["git", "-C", str(ROOT), "show", f"{commit}:flyops/db/restore.py"],
                          capture_output=True, text=True, check=True).stdout
    path = work / f"restore_{commit}.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location(f"restore_before_{commit}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.restore_script


def run(args, pg, work: Path) -> None:
    import flyops.db.restore as restore_module
    from flyops.db.backup import backup
    from flyops.db.config import BackupSource
    from flyops.db.restore import PHASES, restore

    facts = c.machine_facts(pg)
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True, check=True).stdout.strip()
    c.create_pgbench_db(pg, "bench", args.scale, args.dataset)
    size = c.db_size(pg, "bench")
    repo = work / "repo"
    c.restic_init(repo)
    lock_dir = work / "locks"
    manifest = backup(BackupSource(pg.url("bench"), c.BENCH_ENV), c.repo_config(repo), lock_dir=lock_dir)
    scripts = {f"before ({args.before})": _script_of(args.before, work), f"after ({head})": restore_module.restore_script}
    phases: dict[str, dict[str, list[float]]] = {name: {} for name in scripts}

    def ours(name: str):
        def go() -> float:
            restore_module.restore_script = scripts[name]
            try:
                with c.stopwatch() as t:
                    r = restore("latest", env=c.BENCH_ENV, repos={c.BENCH_ENV: c.repo_config(repo)},
                                server_url=pg.url(), jobs=2, lock_dir=lock_dir)
            finally:
                restore_module.restore_script = scripts[f"after ({head})"]
            c.drop_db(pg, r["database"])
            for k, v in r["phases"].items():
                phases[name].setdefault(k, []).append(v)
            return t[0]
        return go

    c.log("warm-up (untimed)")
    ours(f"after ({head})")()
    for v in phases.values():
        v.clear()
    res = c.interleave(args.runs, {name: ours(name) for name in scripts}, settle=lambda: c.settle(pg))
    before, after = (res[n] for n in scripts)
    rows = [[n, f"{s.median:.2f}", f"{s.min:.2f}", s.all(), c.ratio(s.median, before.median),
             f"{s.cpu_median:.2f}" if s.cpu_median is not None else "—"] for n, s in res.items()]
    keys = [k for k in PHASES if any(k in p for p in phases.values())]
    phase_rows = [[PHASES[k], *(f"{c.Samples(phases[n][k]).median:.2f}" if phases[n].get(k) else "—" for n in scripts)]
                  for k in keys]
    body = f"""
`restore("latest")` of one backup of {c.dataset_label(args)} ({size} on disk; dump {c.mib(manifest['bytes'])}),
with the restore script of {args.before} against this checkout's ({head}); {args.runs} runs each,
interleaved ABBA, seconds of wall time.

**after / before = {after.median / before.median:.2f}× (median), {after.median - before.median:+.2f} s.**

{c.md_table(["restore script", "median s", "min s", "all runs s", "ratio (median)", "client CPU s (median)"], rows)}

### Phases (median seconds from the start of the fetch to the end of each)

{c.md_table(["phase ended", *scripts], phase_rows)}

* {c.drop_caches_note()}
"""
    c.write_results(NAME, args, f"Restore script A/B ({c.dataset_label(args)})", body, facts)


if __name__ == "__main__":
    main()
