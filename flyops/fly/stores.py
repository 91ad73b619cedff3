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
from flyops.secret import Secret
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


# ---------------------------------------------------------------------------------------
# Health: a tiny RESP client (AUTH, PING, INFO) and what `keydb.status` reports per node


class RespError(Exception):
    pass


class Resp:
    """Just enough RESP2 for AUTH / PING / INFO over a plain socket. Values go in the
    protocol stream, never in argv or messages."""

    def __init__(self, host: str, port: int, timeout: float = 5.0):
        import socket

        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buf = b""

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Resp:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(self, *args: str | Secret) -> object:
        parts = [a.reveal() if isinstance(a, Secret) else a for a in args]
        out = f"*{len(parts)}\r\n".encode()
        for p in parts:
            b = p.encode()
            out += b"$" + str(len(b)).encode() + b"\r\n" + b + b"\r\n"
        self.sock.sendall(out)
        return self._reply()

    def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise RespError("connection closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _reply(self) -> object:
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RespError(rest.decode(errors="replace"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            while len(self.buf) < n + 2:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise RespError("connection closed")
                self.buf += chunk
            data, self.buf = self.buf[:n], self.buf[n + 2:]
            return data.decode(errors="replace")
        if kind == b"*":
            return [self._reply() for _ in range(int(rest))]
        raise RespError(f"unexpected reply {line[:20]!r}")


def parse_info(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and ":" in line:
            k, v = line.split(":", 1)
            out[k] = v.strip()
    return out


def expected_links_for(stack: Stack, store: str, region: str) -> int:
    """How many replication links the node of `store` in `region` should have up: KeyDB, one
    master per other region (the mesh); Valkey, one master (its primary) outside the primary
    region and one replica per other region in it; Redis (one standalone instance), none."""
    engine = stack.stores[store].engine
    others = len(stack.regions) - 1
    if engine == "keydb":
        return others
    if engine == "valkey":
        return others if region == stack.primary_region else 1
    return 0


def _count(value: str | None) -> int:
    """`errorstat_OOM:count=3` -> 3; plain integers as they are; missing -> 0."""
    if not value:
        return 0
    if value.startswith("count="):
        value = value.split(",", 1)[0][len("count="):]
    try:
        return int(value)
    except ValueError:
        return 0


# A master PINGs its replicas every repl-ping-replica-period (10 s by default, in KeyDB 6.3.4,
# Redis and Valkey alike), so a link with nothing read for longer than this is stale even
# while it still says "up": the server itself only drops it after repl-timeout (60 s).
SILENT_LINK_SECONDS = 30


def master_links(info: dict[str, str]) -> list[tuple[str, str]]:
    """(host, link state) per master the node replicates from: "up", "down", or "silent Ns".
    KeyDB 6.3.4 prints one block per master, master_host / master_1_host / ... with
    master_link_status / master_1_link_status / master_1_last_io_seconds_ago (genRedisInfoString,
    src/server.cpp); Redis and Valkey print one master_host block."""
    out = []
    for key, host in info.items():
        if key.startswith("master") and key.endswith("_host"):
            prefix = key[: -len("_host")]
            state = info.get(f"{prefix}_link_status", "?")
            try:
                silent = int(info.get(f"{prefix}_last_io_seconds_ago", "-1"))
            except ValueError:
                silent = -1
            if state == "up" and silent > SILENT_LINK_SECONDS:
                state = f"silent {silent}s"
            out.append((host, state))
    return sorted(out)


def node_status(stack: Stack, store: str, region: str, info: dict[str, str] | None, error: str | None = None,
                expected_links: int | None = None) -> dict:
    """One row of `keydb.status`: what the node says against what the stack wants.

    Not ok when it is unreachable, differs from the stack (maxmemory, policy, role), has
    fewer links up than the mesh needs (a region that is isolated: none up), or is rejecting
    writes (noeviction at maxmemory, or errors answered as OOM since the server started).
    """
    want = stack.stores[store]
    if expected_links is None:
        expected_links = expected_links_for(stack, store, region)
    row: dict = {"store": store, "app": stack.app_name(store), "region": region, "engine": want.engine,
                 "ok": False, "error": error, "expected_links": expected_links}
    if info is None:
        row["problems"] = [error or "unreachable"]
        return row
    maxmemory = int(info.get("maxmemory", "0") or 0)
    used = int(info.get("used_memory", "0") or 0)
    role = info.get("role", "?")
    replicas = int(info.get("connected_slaves", "0") or 0)
    links = master_links(info)
    links_up = sum(1 for _, state in links if state == "up")  # KeyDB's connected_masters, less silent links
    oom = _count(info.get("errorstat_OOM"))
    loading = _count(info.get("errorstat_LOADING"))
    problems = []
    if maxmemory != parse_size(want.maxmemory):
        problems.append(f"maxmemory {maxmemory} != stack {parse_size(want.maxmemory)}")
    if info.get("maxmemory_policy") != want.policy:
        problems.append(f"policy {info.get('maxmemory_policy')} != stack {want.policy}")
    is_primary = region == stack.primary_region
    if want.engine == "valkey":
        expect = "master" if is_primary else "slave"
        if role not in ((expect,) if is_primary else ("slave", "replica")):
            problems.append(f"role {role}, expected {expect} in {region}")
    if want.engine == "valkey" and is_primary:
        have, what = replicas, "replicas"
    else:
        have, what = links_up, "masters"
    if expected_links and have == 0:
        problems.append(f"{region} is isolated: 0 of {expected_links} {what} connected")
    elif have < expected_links:
        problems.append(f"{have} of {expected_links} {what} connected")
    for host, state in links:
        if state != "up":
            problems.append(f"link to {host} {state}")
    if info.get("master_global_link_status") == "down" and not any("link to" in p for p in problems):
        problems.append("master_global_link_status down")
    writes_rejected = want.policy == "noeviction" and maxmemory and used >= maxmemory
    if writes_rejected:
        problems.append("at maxmemory with noeviction: writes are rejected (OOM)")
    elif oom:
        problems.append(f"{oom} write(s) rejected with OOM since the server started")
    row.update(role=role, replicas=replicas, masters=len(links), masters_up=links_up, links=links,
               used_memory=used, maxmemory=maxmemory,
               used_pct=round(100 * used / maxmemory, 1) if maxmemory else None, policy=info.get("maxmemory_policy"),
               evicted_keys=_count(info.get("evicted_keys")), rejected_oom=oom, rejected_loading=loading,
               version=info.get("redis_version"), problems=problems, ok=not problems)
    return row


def probe(host: str, port: int, password: Secret) -> dict[str, str]:
    """AUTH, PING and INFO against one node; RespError/OSError on failure."""
    with Resp(host, port) as r:
        r.call("AUTH", password)
        if r.call("PING") != "PONG":
            raise RespError("PING did not answer PONG")
        info = parse_info(str(r.call("INFO")))
        for key in ("maxmemory", "maxmemory-policy"):  # INFO's memory section has both; CONFIG is the fallback
            ikey = key.replace("-", "_")
            if ikey not in info:
                got = r.call("CONFIG", "GET", key)
                if isinstance(got, list) and len(got) == 2:
                    info[ikey] = str(got[1])
        return info
