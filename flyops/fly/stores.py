"""The store apps' build folders: var/build/<env>/<store>/, from flyops/fly/store_image/.

Each rendered fly/<env>/<store>.toml builds from its folder (`[build] dockerfile`, see
flyops.fly.render.store_build_dir). A folder holds

* `Dockerfile` — the engine's image plus our files;
* `store.conf` — the Redis-compatible configuration (dir, save lines, maxmemory and policy
  from the stack, IPv6 listening, replica-serve-stale-data yes); a stock redis-server loads it;
* `keydb-multimaster.conf` (KeyDB only) — active-replica / multi-master, included after it;
* `start.sh` — password from the app's secret on the server's stdin, engine-specific topology;
* `peers.sh` (KeyDB only) — peer discovery from Fly's private DNS, add and remove.

`render_store_dir(stack, store)` is pure ({filename: text}); `write_store_dirs` writes them
(deploy does, right before it builds a store; `inv keydb.render` on demand, to read them);
`stale_store_dirs` compares with disk. The folders are build output and are not committed: the
templates are package data and the stack is the only input.
"""

from __future__ import annotations

from pathlib import Path
from string import Template

from flyops.fly.flyctl.runner import FlyRunner
from flyops.fly.render import store_build_dir
from flyops.stack.model import Stack, Store
from flyops.units import parse_size

TEMPLATES = Path(__file__).resolve().parent / "store_image"
STORE_FILES_HEADER = "Generated for `fly deploy` from flyops/fly/store_image/ and the {env} stack. Do not edit."
IMAGES = {
    # KeyDB's last release (2023-10); unmaintained since, see docs/stores.md
    "keydb": "eqalpha/keydb:x86_64_v6.3.4",
    "valkey": "valkey/valkey:9.0",
    "redis": "redis:7.2",
}
NOTES = {
    "keydb": "multi-master: every region writable, peers from Fly DNS",
    "valkey": "one writable primary in the primary region, replicas elsewhere",
    "redis": "one standalone instance per machine",
}
SAVE_LINES = {  # RDB snapshot thresholds (seconds, changes); one `save` line each
    "cache": [(3600, 1)],
    "cable": [(3600, 1), (300, 100)],
    "kv": [(3600, 1), (300, 100), (60, 10000)],
    "jobs": [(3600, 1), (300, 100), (60, 10000)],
}


def _read(name: str) -> str:
    return (TEMPLATES / name).read_text(encoding="utf-8")


def render_conf(stack: Stack, name: str) -> str:
    store: Store = stack.stores[name]
    replica = ""
    if store.engine == "valkey":
        replica = "# replicas (outside the primary region) are read-only copies of the primary\nreplica-read-only yes\n"
    text = Template(_read("store.conf.tmpl")).substitute(
        header=STORE_FILES_HEADER.format(env=stack.env),
        store=name,
        engine=store.engine,
        purpose=store.purpose,
        password_var=store.secret_name,
        save_lines="\n".join(f"save {s} {c}" for s, c in SAVE_LINES[store.purpose]),
        # jobs and kv (Kredis: application state) must survive a crash between snapshots:
        # append-only file as well; cable and cache are rebuilt by the app
        appendonly="yes" if store.purpose in ("jobs", "kv") else "no",
        maxmemory_bytes=parse_size(store.maxmemory),
        policy=store.policy,
        replica_lines=replica,
    )
    return text.rstrip("\n") + "\n"


def render_dockerfile(stack: Stack, name: str) -> str:
    store = stack.stores[name]
    keydb = store.engine == "keydb"
    install = ""
    if keydb:  # dig for peers.sh
        install = ("RUN apt-get update && apt-get install -y --no-install-recommends dnsutils \\\n"
                   "    && rm -rf /var/lib/apt/lists/*\n")
    return Template(_read("Dockerfile.tmpl")).substitute(
        header=STORE_FILES_HEADER.format(env=stack.env),
        engine=store.engine,
        engine_note=NOTES[store.engine],
        image=IMAGES[store.engine],
        install=install,
        extra_conf="keydb-multimaster.conf " if keydb else "",
        extra_scripts="peers.sh " if keydb else "",
    )


def render_store_dir(stack: Stack, name: str) -> dict[str, str]:
    files = {
        "Dockerfile": render_dockerfile(stack, name),
        "store.conf": render_conf(stack, name),
        "start.sh": _read("start.sh"),
    }
    if stack.stores[name].engine == "keydb":
        files["keydb-multimaster.conf"] = _read("keydb-multimaster.conf")
        files["peers.sh"] = _read("peers.sh")
    return files


def render_all_stores(stack: Stack, names: list[str] | None = None) -> dict[Path, str]:
    stack.require_fly()
    out: dict[Path, str] = {}
    for name in names if names is not None else list(stack.stores):
        folder = store_build_dir(stack, name)
        for fname, text in render_store_dir(stack, name).items():
            out[folder / fname] = text
    return out


def write_store_dirs(stack: Stack, writer: FlyRunner | None = None, names: list[str] | None = None) -> list[Path]:
    """Write the store folders (every store, or `names`) through the runner's `write_text` (so
    `--dry` prints instead); returns the files that changed (or would). They are build output:
    not counted as changes of the environment."""
    writer = writer or FlyRunner()
    changed = []
    for path, text in render_all_stores(stack, names).items():
        mode = 0o755 if path.suffix == ".sh" else 0o644
        if writer.write_text(path, text, mode=mode, shown=str(path.relative_to(stack.root)),
                             build_output=True) != "unchanged":
            changed.append(path)
    return changed


def stale_store_dirs(stack: Stack) -> list[tuple[Path, str]]:
    out = []
    wanted = render_all_stores(stack)
    for path, text in wanted.items():
        if not path.exists():
            out.append((path, "missing"))
        elif path.read_text(encoding="utf-8") != text:
            out.append((path, "stale"))
    env_dir = store_build_dir(stack, "x").parent
    if env_dir.is_dir():
        for extra in sorted(p for p in env_dir.rglob("*") if p.is_file()):
            if extra not in wanted:
                out.append((extra, "not part of the stack any more (delete it)"))
    return out
