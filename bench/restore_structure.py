"""Where restore()'s time goes: its streamed structure against bare pg_restore, without restic.

    .venv/bin/python bench/restore_structure.py              # pgbench scale 50
    .venv/bin/python bench/restore_structure.py --scale 5    # smoke run

`restore()` differs from bare `pg_restore -j 2 file` in four ways: the data section streams
(one `pg_restore --section=data` reading a pipe, because the file is still being fetched),
it reaches that pipe through `tail -f` following the growing file, a drill or a prefetch
hashes the same bytes with one more reader, and restic fetches the file. This benchmark adds
the first three one at a time to bare, all from the same local `pg_dump -Fc -Z0` file (no
restic), interleaved in one run, and times the fixed costs on their own: opening the
repository (restic's key derivation, paid by every restic process) and ANALYZE. `restore.md`
has the whole thing with restic. Written to bench/results/restore_structure.md.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as c  # noqa: E402

NAME = "restore_structure"
FLAGS = ["--no-owner", "--no-acl", "--exit-on-error"]


def main() -> None:
    c.main_with_cluster(NAME, __doc__.splitlines()[0], run, runs=5)


def run(args, pg, work: Path) -> None:
    facts = c.machine_facts(pg)
    c.create_pgbench_db(pg, "bench", args.scale, args.dataset)
    z0 = work / "z0.dump"
    c.pg_dump_file(pg, "bench", z0, "-Z0")
    repo = work / "repo"
    c.restic_init(repo)
    f = shlex.quote(str(z0))
    # a dead pid: tail reads to the end of the (complete) file, then exits, as when the fetch has ended
    follow = f"tail -c +1 -s 0.1 --pid=2147483646 -f {f}"
    counter = iter(range(10_000))
    analyze: list[float] = []

    def restore(command_for, *, with_analyze: bool = False):
        return lambda: c.timed_restore(pg, f"s_{next(counter)}",
                                       lambda ci: ["bash", "-c", "set -e -o pipefail\n" + command_for(ci)],
                                       analyze if with_analyze else None)

    def pr(ci: str, *a: str) -> str:
        return shlex.join(["pg_restore", *FLAGS, "-d", ci, *a])

    def structure(ci: str, data_from: str) -> str:
        return (f"{pr(ci, '--section=pre-data')} < {f}\n{data_from} {pr(ci, '--section=data')}\n"
                f"{pr(ci, '--jobs=2', '--section=post-data', str(z0))}")

    def open_repo() -> float:
        with c.stopwatch() as t:
            c.run(["restic", "--repo", str(repo), "--no-cache", "cat", "config"], env=c.restic_env())
        return t[0]

    variants = {
        "bare `pg_restore -j 2 file`": restore(lambda ci: pr(ci, "--jobs=2", str(z0)), with_analyze=True),
        "structure: pre-data, data from a pipe, post-data -j 2 from the file": restore(
            lambda ci: structure(ci, f"cat {f} |")),
        "… data through `tail -f` (a loader following the fetch)": restore(lambda ci: structure(ci, f"{follow} |")),
        "… plus a SHA-256 reader beside it (prefetch, drill)": restore(
            lambda ci: f"{{ {follow} | openssl dgst -sha256 > /dev/null; }} &\n" + structure(ci, f"{follow} |")
            + "\nwait"),
        "restic opens the repository (`cat config`: key derivation)": open_repo,
    }
    c.log("warm-up (untimed)")
    restore(lambda ci: pr(ci, "--jobs=2", str(z0)))()
    res = c.interleave(args.runs, variants, settle=lambda: c.settle(pg))
    base = res["bare `pg_restore -j 2 file`"]
    rows = []
    for name, s in res.items():
        cpu = f"{s.cpu_median:.2f}" if s.cpu_median is not None else "—"
        rows.append([name, f"{s.median:.2f}", f"{s.min:.2f}", s.all(), c.ratio(s.median, base.median), cpu])
    an = c.Samples(analyze)
    rows.append(["ANALYZE after bare (ours runs it; bare does not)", f"{an.median:.2f}", f"{an.min:.2f}", an.all(),
                 c.ratio(an.median, base.median), "—"])
    body = f"""
The same `pg_dump -Fc -Z0` file ({c.mib(z0.stat().st_size)}, {c.dataset_label(args)}), restored
into an empty database each time; {args.runs} runs per variant, interleaved ABBA; seconds of wall
time, and the client CPU seconds (pg_restore, tail, openssl, restic; not the server).

{c.md_table(["variant", "median s", "min s", "all runs s", "ratio (median)", "client CPU s (median)"], rows)}

* {c.drop_caches_note()}
"""
    c.write_results(NAME, args, f"Restore structure ({c.dataset_label(args)})", body, facts)


if __name__ == "__main__":
    main()
