"""Why setup fetches Debian 13's restic: Debian 12's 0.14 against 0.18 on the same dump.

    .venv/bin/python bench/restic.py              # pgbench scale 50
    .venv/bin/python bench/restic.py --scale 5    # smoke run

Needs both binaries: the system's (/usr/bin/restic, Debian 12: 0.14) and the one scripts/setup
put in .venv/bin (Debian 13: 0.18). Dumps the pgbench database once (`pg_dump -Fc -Z0` to a
file), then times, interleaved, for each binary: `backup --stdin` of that file into a fresh
repository, `dump` of it to /dev/null (what a restore fetches), and opening the repository
(`cat config`: the scrypt key derivation every restic run pays). Wall and CPU (user+sys) of the
restic process. Written to bench/results/restic.md.
"""

from __future__ import annotations

import shlex
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as c  # noqa: E402

NAME = "restic"
SYSTEM = Path("/usr/bin/restic")


def main() -> None:
    args = c.parse_args(__doc__.splitlines()[0])
    venv = c.ROOT / ".venv" / "bin" / "restic"
    if not SYSTEM.exists() or not venv.exists():
        raise SystemExit(f"needs both {SYSTEM} and {venv} (scripts/setup fetches the latter when the system's is old)")
    with c.workdir(NAME) as work:
        pg = c.start_cluster()
        try:
            run(args, pg, work, {"system": SYSTEM, "venv": venv})
        finally:
            pg.stop()


def run(args, pg, work: Path, binaries: dict[str, Path]) -> None:
    facts = c.machine_facts(pg)
    db = "bench"
    c.create_pgbench_db(pg, db, args.scale, args.dataset)
    dump = work / "z0.dump"
    c.pg_dump_file(pg, db, dump, "-Z0")
    env = c.restic_env()
    q = shlex.quote
    versions = {k: c._first_line([str(b), "version"]) for k, b in binaries.items()}

    def sh(script: str) -> float:
        with c.stopwatch() as t:
            c.run(["bash", "-c", "set -eo pipefail\n" + script], env=env)
        return t[0]

    def backup(key: str):
        def go() -> float:
            repo = work / f"repo-backup-{key}"
            c.run([str(binaries[key]), "--repo", str(repo), "--no-cache", "init"], env=env)
            secs = sh(f"{q(str(binaries[key]))} --repo {q(str(repo))} --no-cache backup --stdin "
                      f"--stdin-filename x.dump --quiet < {q(str(dump))}")
            shutil.rmtree(repo)
            return secs
        return go

    fetch_repo = work / "repo-fetch"  # written once by the system's restic: both read the same repository
    c.run([str(binaries["system"]), "--repo", str(fetch_repo), "--no-cache", "init"], env=env)
    sh(f"{q(str(binaries['system']))} --repo {q(str(fetch_repo))} --no-cache backup --stdin "
       f"--stdin-filename x.dump --quiet < {q(str(dump))}")

    def fetch(key: str):
        return lambda: sh(f"{q(str(binaries[key]))} --repo {q(str(fetch_repo))} --no-cache dump latest /x.dump > /dev/null")

    def open_repo(key: str):
        return lambda: sh(f"{q(str(binaries[key]))} --repo {q(str(fetch_repo))} --no-cache cat config > /dev/null")

    variants = {}
    for key in binaries:
        variants[f"`backup --stdin` ({key})"] = backup(key)
        variants[f"`dump` to /dev/null ({key})"] = fetch(key)
        variants[f"`cat config`, open only ({key})"] = open_repo(key)
    res = c.interleave(args.runs, variants)
    rows = []
    for name, s in res.items():
        cpu = f"{s.cpu_median:.2f}" if s.cpu_median is not None else "—"
        rows.append([name, f"{s.median:.2f}", s.all(), cpu])
    size = dump.stat().st_size

    def ratio(op: str) -> str:
        a, b = res[f"{op} (system)"].median, res[f"{op} (venv)"].median
        return f"{a / b:.2f}×" if b else "—"

    body = f"""
The same `pg_dump -Fc -Z0` file ({c.mib(size)}, {c.dataset_label(args)}) through each restic;
{args.runs} runs per variant, interleaved; seconds of wall time, and CPU seconds of the process.

* system: {versions['system']} ({SYSTEM})
* venv: {versions['venv']} (.venv/bin/restic, fetched by `scripts/setup`)

{c.md_table(["variant", "median s", "all runs s", "CPU s (median)"], rows)}

**0.14 takes {ratio("`dump` to /dev/null")} the time of 0.18 to fetch a dump, {ratio("`backup --stdin`")} to
back one up.** Profiled by hand with `perf` (2026-11-26) (symbols from the Go binary's pclntab): 0.14 spends about
60% of its backup CPU in `github.com/minio/sha256-simd.blockGeneric`: on CPUs without the SHA
extensions (`sha_ni`; this one has AVX2 and AVX-512 but not SHA) that library's `Sum256`
falls back to plain Go code. 0.18 is built with Go 1.24, whose `crypto/sha256` uses AVX2 here.
0.18 verifies each blob before it uploads it, which is why its backup gains less than its dump.

* {c.drop_caches_note()}
"""
    c.write_results(NAME, args, f"restic 0.14 (Debian 12) against 0.18 (Debian 13), {c.dataset_label(args)}",
                    body, facts)


if __name__ == "__main__":
    main()
