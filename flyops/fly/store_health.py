"""Store health, what `keydb.status` shows: a tiny RESP client (AUTH, PING, INFO) reaching each
store node through `fly proxy`, and per node its role, replication links against what the
stack expects, memory against maxmemory, evictions and rejected writes."""

from __future__ import annotations

from typing import Any

from flyops.errors import OpsError
from flyops.fly.flyctl import commands as fly
from flyops.fly.flyctl.runner import FlyRunner, parallel
from flyops.procs import free_port
from flyops.secret import Secret, redact
from flyops.stack.model import STORE_PORT, Stack
from flyops.units import parse_size


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


def read_store_nodes(stack: Stack, runner: FlyRunner, stores: list[str], regions: list[str],
                     passwords: dict[str, Secret]) -> list[dict[str, Any]]:
    """One `node_status` row per store and region of its placement, each read through its own
    `fly proxy` to `<region>.<app>.internal:6379`, all at once. A node that cannot be reached is
    a row saying why, not an error."""

    def one(name: str, region: str) -> dict[str, Any]:
        app = stack.app_name(name)
        try:
            with runner.start_proxy(fly.proxy(app, free_port(), STORE_PORT, f"{region}.{app}.internal"), timeout=30) as px:
                info = probe("127.0.0.1", px.local_port, passwords[stack.stores[name].password_key])
            return node_status(stack, name, region, info)
        except (OSError, OpsError, Exception) as exc:  # noqa: BLE001 - a node's failure is a row, not a crash
            return node_status(stack, name, region, None, redact(str(exc), runner.masks)[:200])

    where = {s: [r for r in regions if r in stack.placement(s)] for s in stores}  # each store's placement
    results = parallel({(s, r): (lambda s=s, r=r: one(s, r)) for s in stores for r in where[s]})
    return [results[(s, r)] for s in stores for r in where[s]]
