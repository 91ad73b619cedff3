"""Shared helpers for the backup / restore / dedup / drill benchmarks.

Each benchmark starts its own throwaway PostgreSQL (`flyops.db.scratch.ScratchCluster`),
seeds it with `pgbench -i -s N`, and measures our code against the bare tool side by side in
one run: every measurement is repeated (`--runs`, default 3) and the variants are interleaved
in ABBA order (A B, B A, A B, ...) so a noisy neighbour hurts both alike. Results are printed
as Markdown and written to `bench/results/<name>.md` (only for scale >= 50, the recorded
size; smaller smoke runs go to a temp folder) with the machine facts and the command to rerun.

Benchmarks are not tests and not product code: they may use `subprocess` directly.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from flyops.db.config import RepoConfig  # noqa: E402
from flyops.db.scratch import ScratchCluster  # noqa: E402
from flyops.secret import Secret  # noqa: E402
from flyops.toolpath import prefer_venv_tools  # noqa: E402

prefer_venv_tools()  # the restic `inv` uses (scripts/setup may put Debian 13's in .venv/bin), for ours and bare

RESULTS = ROOT / "bench" / "results"
RECORDED_SCALE = 50  # the issue asks for >= 50; smaller scales are smoke runs
BENCH_ENV = "bench"
REPO_PASSWORD = Secret("bench-only-restic-password")  # a throwaway repository in a temp folder

# Server settings for the scratch cluster (on top of ScratchCluster's fsync=off etc.): fewer
# forced checkpoints while pgbench -i and pg_restore write ~1 GB. Same server for bare and ours.
SERVER_SETTINGS = {"max_wal_size": "'4GB'", "checkpoint_timeout": "'30min'", "maintenance_work_mem": "'256MB'"}


# -- arguments, facts, output -------------------------------------------------------------------


def parse_args(description: str, *, runs: int = 3, extra: Callable[[argparse.ArgumentParser], None] | None = None):
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--scale", type=int, default=RECORDED_SCALE,
                   help=f"pgbench scale (default {RECORDED_SCALE}, ~15 MB per unit; 5 for a quick smoke run)")
    p.add_argument("--runs", type=int, default=runs, help=f"repetitions of every measurement (default {runs})")
    p.add_argument("--dataset", choices=DATASETS, default="pgbench",
                   help="pgbench: pgbench tables only (their blank-padded rows gzip ~36:1, the best case for "
                        "a gzip'd pg_dump); pgbench+text: plus a table of 3,000,000 rows of random hex text, "
                        "the reference's dataset (postgres-backups.md section 3.1). Results of pgbench+text "
                        "go to <name>_text.md")
    p.add_argument("--out", type=Path, default=None,
                   help="where to write the Markdown result (default bench/results/<name>.md at scale >= "
                        f"{RECORDED_SCALE}, a temp folder otherwise)")
    p.add_argument("--split-cpus", action="store_true",
                   help="pin the PostgreSQL server to the last CPU and this benchmark (and every client tool it "
                        "starts: pg_restore, restic, ...) to the others, as when the client runs on another "
                        "machine than the server (db.restore from a laptop or CI against Fly Postgres)")
    if extra:
        extra(p)
    return p.parse_args()


#: set by `split_cpus`: which CPUs the server and the clients were pinned to, for machine_facts
CPU_SPLIT: str | None = None


def _server_pids(pg: ScratchCluster) -> list[int]:
    """The postmaster (first line of postmaster.pid) and its children (/proc/<pid>/stat ppid)."""
    master = int((pg.datadir / "postmaster.pid").read_text().split()[0])
    pids = [master]
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == master:
                pids.append(int(stat.parent.name))
    return pids


def split_cpus(pg: ScratchCluster) -> None:
    """Server on the last CPU, this process (and so every child it starts afterwards) on the
    others. Backends fork from the postmaster, so they inherit its CPU (sched_setaffinity(2))."""
    global CPU_SPLIT
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        raise SystemExit("--split-cpus needs at least 2 CPUs")
    server, clients = {cpus[-1]}, set(cpus[:-1])
    for pid in _server_pids(pg):
        os.sched_setaffinity(pid, server)
    os.sched_setaffinity(0, clients)
    CPU_SPLIT = f"server on CPU {cpus[-1]}, clients on CPU {','.join(map(str, sorted(clients)))} (--split-cpus)"


def main_with_cluster(name: str, description: str, run: Callable[..., None], *, runs: int = 3,
                      extra: Callable[[argparse.ArgumentParser], None] | None = None) -> None:
    """The usual `main()`: parse the arguments, then `run(args, pg, work)` with a throwaway
    PostgreSQL and a work folder, both removed afterwards."""
    args = parse_args(description, runs=runs, extra=extra)
    with workdir(name) as work:
        pg = start_cluster()
        try:
            if getattr(args, "split_cpus", False):
                split_cpus(pg)
            run(args, pg, work)
        finally:
            pg.stop()


def out_path(name: str, args) -> Path:
    if args.out:
        return args.out
    if getattr(args, "dataset", "pgbench") != "pgbench":
        name += "_text"
    if args.scale >= RECORDED_SCALE:
        return RESULTS / f"{name}.md"
    return Path(tempfile.gettempdir()) / "flyops-bench" / f"{name}.scale{args.scale}.md"


def rerun_command(name: str) -> str:
    args = [a for a in sys.argv[1:]]
    return shlex.join([".venv/bin/python", f"bench/{name}.py", *args])


def _first_line(argv: list[str]) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, check=False).stdout.strip().splitlines()[0]
    except (OSError, IndexError):
        return "(unavailable)"


def machine_facts(pg: ScratchCluster | None = None) -> dict[str, str]:
    mem = cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    facts = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpus (nproc)": str(os.cpu_count()),
        "cpu model": cpu or "(unknown)",
        "memory": mem or "(unknown)",
        "load average at start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "kernel": platform.release(),
        "pg_dump": _first_line(["pg_dump", "--version"]),
        "pg_restore": _first_line(["pg_restore", "--version"]),
        "restic": _first_line(["restic", "version"]) + f" ({shutil.which('restic')})",
        "python": platform.python_version(),
        "flyops commit": _first_line(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"]),
    }
    if CPU_SPLIT:
        facts["cpus used"] = CPU_SPLIT
    if pg is not None:
        facts["server"] = pg.psql("SELECT version()").split(",")[0]
        facts["server settings"] = ("scratch cluster: fsync=off, synchronous_commit=off, full_page_writes=off, "
                                    + ", ".join(f"{k}={v.strip(chr(39))}" for k, v in SERVER_SETTINGS.items())
                                    + "; clients over TCP 127.0.0.1 with a password")
    return facts


def md_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    def cell(v: object) -> str:
        return str(v).replace("|", "\\|")

    out = ["| " + " | ".join(headers) + " |", "| " + " | ".join("---" for _ in headers) + " |"]
    out += ["| " + " | ".join(cell(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def write_results(name: str, args, title: str, body: str, facts: dict[str, str]) -> Path:
    path = out_path(name, args)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = (f"# {title}\n\n{body.strip()}\n\n## Machine\n\n"
            + md_table(["fact", "value"], list(facts.items()))
            + f"\n\n## Rerun\n\n```sh\n{rerun_command(name)}\n```\n")
    path.write_text(text)
    print(text)
    print(f"(written to {path})", file=sys.stderr)
    return path


def log(msg: str) -> None:
    print(f"[{datetime.now().strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- measuring --------------------------------------------------------------------------------------


class Timing(float):
    """Wall seconds, carrying the CPU seconds (user+sys) of this process and its waited-for
    children spent in the same interval (client side: pg_dump, restic, sha256sum, Python;
    not the PostgreSQL server)."""

    cpu: float | None = None


def _cpu_now() -> float:
    s, ch = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + ch.ru_utime + ch.ru_stime


@dataclass
class Samples:
    values: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def min(self) -> float:
        return min(self.values)

    @property
    def max(self) -> float:
        return max(self.values)

    @property
    def cpu_median(self) -> float | None:
        return statistics.median(self.cpu) if self.cpu else None

    def all(self, fmt: str = "{:.2f}") -> str:
        return ", ".join(fmt.format(v) for v in self.values)


def interleave(runs: int, variants: dict[str, Callable[[], float]],
               settle: Callable[[], None] | None = None) -> dict[str, Samples]:
    """Run every variant `runs` times, ABBA order. Each callable does its own untimed setup and
    teardown and returns the seconds it measured. `settle` (untimed) runs before every one, to
    start each from the same state (e.g. a CHECKPOINT and a sync, so no run pays for writing
    back what the one before it left dirty)."""
    names = list(variants)
    out = {n: Samples() for n in names}
    for i in range(runs):
        order = names if i % 2 == 0 else list(reversed(names))
        for n in order:
            if settle:
                settle()
            secs = variants[n]()
            out[n].values.append(float(secs))
            cpu = getattr(secs, "cpu", None)
            if cpu is not None:
                out[n].cpu.append(cpu)
            log(f"run {i + 1}/{runs} {n}: {secs:.2f}s" + (f" (cpu {cpu:.2f}s)" if cpu is not None else ""))
    return out


@contextlib.contextmanager
def stopwatch() -> Iterator[list[float]]:
    box: list[float] = []
    c0, t0 = _cpu_now(), time.perf_counter()
    try:
        yield box
    finally:
        t = Timing(time.perf_counter() - t0)
        t.cpu = _cpu_now() - c0
        box.append(t)


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}×" if b else "n/a"


def mib(n: float) -> str:
    return f"{n / 1024 / 1024:,.1f} MiB"


# -- the scratch server and the tools ---------------------------------------------------------------


def start_cluster(base: Path | None = None) -> ScratchCluster:
    pg = ScratchCluster(settings=SERVER_SETTINGS, base_dir=str(base) if base else None)
    pg.start()
    return pg


def conninfo(pg: ScratchCluster, db: str) -> str:
    """For a bare tool's -d: everything but the password (that is PGPASSWORD in tool_env)."""
    return f"host={pg.host} port={pg.port} user=postgres dbname={db}"


def tool_env(pg: ScratchCluster) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["PGPASSWORD"] = pg.password.reveal()
    return env


def run(argv: list[str], *, env: dict[str, str] | None = None, stdout=subprocess.DEVNULL) -> None:
    p = subprocess.run(argv, env=env, stdout=stdout, stderr=subprocess.PIPE, text=True, check=False)
    if p.returncode != 0:
        raise SystemExit(f"{shlex.join(argv)} failed (exit {p.returncode}):\n{p.stderr[-2000:]}")


def pgbench_bin() -> str:
    """pgbench of the server binaries the benchmarks run (pg_config --bindir, else the newest
    /usr/lib/postgresql/*/bin: Debian 12 ships 15, Debian 13 17), else the one on PATH."""
    from flyops.db.scratch import find_pg_bindir
    from flyops.errors import OpsError

    try:
        candidates = [str(find_pg_bindir() / "pgbench")]
    except OpsError:
        candidates = []
    for c in (*candidates, shutil.which("pgbench") or ""):
        if c and Path(c).is_file():
            return c
    raise SystemExit("pgbench not found (apt-get install postgresql-contrib)")


DATASETS = ("pgbench", "pgbench+text")
TEXT_ROWS = 3_000_000  # postgres-backups.md section 3.1: "pgbench scale 50 + a 3 M-row table of random hex text"


def dataset_label(args) -> str:
    if getattr(args, "dataset", "pgbench") == "pgbench":
        return f"pgbench scale {args.scale}"
    return f"pgbench scale {args.scale} + {TEXT_ROWS * args.scale // RECORDED_SCALE:,} rows of random hex text"


def create_pgbench_db(pg: ScratchCluster, db: str, scale: int, dataset: str = "pgbench") -> float:
    """CREATE DATABASE + `pgbench -i -s scale -q` (+ the text table for pgbench+text, scaled
    with `scale`: 3 M rows at 50); returns the seconds it took."""
    pg.psql(f'CREATE DATABASE "{db}"')
    log(f"pgbench -i -s {scale} into {db} ...")
    with stopwatch() as t:
        run([pgbench_bin(), "-i", "-s", str(scale), "-q", conninfo(pg, db)], env=tool_env(pg))
        if dataset == "pgbench+text":
            rows = TEXT_ROWS * scale // RECORDED_SCALE
            log(f"adding notes: {rows:,} rows of random hex text ...")
            pg.psql("CREATE TABLE notes AS SELECT g AS id, md5(random()::text) || md5(random()::text) || "
                    "md5(random()::text) || md5(random()::text) AS body "
                    f"FROM generate_series(1, {rows}) g; ALTER TABLE notes ADD PRIMARY KEY (id)", dbname=db)
    pg.psql("CHECKPOINT")
    log(f"pgbench -i done in {t[0]:.1f}s; database size {db_size(pg, db)}")
    return t[0]


def db_size(pg: ScratchCluster, db: str) -> str:
    return pg.psql(f"SELECT pg_size_pretty(pg_database_size('{db}'))").strip()


def db_bytes(pg: ScratchCluster, db: str) -> int:
    return int(pg.psql(f"SELECT pg_database_size('{db}')"))


def settle(pg: ScratchCluster) -> None:
    """Untimed, before each timed run: write back what earlier runs left dirty (CHECKPOINT, then
    the kernel's page cache), so one run's writeback does not land in the next one's time."""
    pg.psql("CHECKPOINT")
    os.sync()


def drop_db(pg: ScratchCluster, db: str) -> None:
    pg.psql(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


def timed_restore(pg: ScratchCluster, db: str, argv_for: Callable[[str], list[str]],
                  analyze: list[float] | None = None) -> float:
    """Seconds `argv_for(conninfo)` takes to restore into a new empty database `db`; then, if
    `analyze` is a list, ANALYZE it and append those seconds; then drop it."""
    pg.psql(f'CREATE DATABASE "{db}" TEMPLATE template0')
    with stopwatch() as t:
        run(argv_for(conninfo(pg, db)), env=tool_env(pg))
    if analyze is not None:
        with stopwatch() as a:
            pg.psql("ANALYZE", dbname=db)
        analyze.append(a[0])
    drop_db(pg, db)
    return t[0]


def timed_full_restore(pg: ScratchCluster, db: str, argv_for: Callable[[str], list[str]]) -> float:
    """Seconds of what a person does by hand, all timed: `createdb`, `argv_for(conninfo)` (the
    restore), then `psql -c ANALYZE` (a restored database without statistics is not ready for
    traffic); then drop it (untimed)."""
    ci = conninfo(pg, db)
    with stopwatch() as t:
        run(["createdb", "--template=template0", "-h", pg.host, "-p", str(pg.port), "-U", "postgres", db],
            env=tool_env(pg))
        run(argv_for(ci), env=tool_env(pg))
        run(["psql", "-X", "-q", "-d", ci, "-c", "ANALYZE"], env=tool_env(pg))
    drop_db(pg, db)
    return t[0]


def pg_dump_file(pg: ScratchCluster, db: str, path: Path, *extra: str) -> float:
    """Bare `pg_dump -Fc [extra] -f path`; returns seconds."""
    with stopwatch() as t:
        run(["pg_dump", "-Fc", *extra, "-f", str(path), "-d", conninfo(pg, db)], env=tool_env(pg))
    return t[0]


def restic_env() -> dict[str, str]:
    env = dict(os.environ)
    env["RESTIC_PASSWORD"] = REPO_PASSWORD.reveal()
    return env


def restic_init(repo: Path) -> None:
    run(["restic", "--repo", str(repo), "--no-cache", "init"], env=restic_env())


def repo_config(repo: Path) -> RepoConfig:
    return RepoConfig(location=str(repo), password=REPO_PASSWORD)


def du_bytes(path: Path) -> int:
    out = subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True, check=True).stdout
    return int(out.split()[0])


def drop_caches_note() -> str:
    return ("Page cache is warm (24 GiB RAM, data fits): these are CPU-bound figures for the pipeline, "
            "not disk-bound ones; a first untimed warm-up run precedes the timed ones.")


@contextlib.contextmanager
def workdir(name: str) -> Iterator[Path]:
    """A temp folder for dumps and repositories, removed afterwards."""
    d = Path(tempfile.mkdtemp(prefix=f"flyops-bench-{name}-"))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)
