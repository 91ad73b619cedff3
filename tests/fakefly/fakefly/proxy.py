"""`fly proxy`: a real TCP forwarder to local services mapped in $FAKEFLY_HOME/services.json."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sys
import threading
from pathlib import Path

from .cli import FlyError


def load_services(home: Path) -> dict:
    p = Path(home) / "services.json"
    if not p.exists():
        return {}
    try:
        return json.loads(p.read_text() or "{}")
    except ValueError:
        return {}


def _fallback_hosts(host: str) -> list[str]:
    hosts = [host]
    m = re.fullmatch(r"(?:top\d+\.nearest\.of\.|[a-z0-9]+\.)?([a-z0-9-]+)\.internal", host)
    if m and f"{m.group(1)}.internal" != host:
        hosts.append(f"{m.group(1)}.internal")
    m = re.fullmatch(r"([a-z0-9-]+)\.flycast", host)
    if m:
        hosts.append(f"{m.group(1)}.internal")
    return hosts


def resolve(home: Path, host: str, port: int) -> str | None:
    services = load_services(home)
    for h in _fallback_hosts(host):
        target = services.get(f"{h}:{port}")
        if target:
            return target
    return None


def host_known(home: Path, st: dict, host: str) -> bool:
    services = load_services(home)
    hosts = _fallback_hosts(host)
    if any(k.rsplit(":", 1)[0] in hosts for k in services):
        return True
    for h in hosts:
        m = re.fullmatch(r"([a-z0-9-]+)\.internal", h)
        if m and m.group(1) in st["apps"] and any(x["state"] == "started" for x in st["apps"][m.group(1)]["machines"]):
            return True
    try:
        socket.inet_pton(socket.AF_INET6, host)
        return True
    except OSError:
        return False


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def _handle(home: Path, client: socket.socket, host: str, port: int) -> None:
    target = resolve(home, host, port)
    if not target:
        sys.stderr.write(f"failed to connect to [{host}]:{port}: connection refused\n")
        sys.stderr.flush()
        client.close()
        return
    thost, _, tport = target.rpartition(":")
    try:
        upstream = socket.create_connection((thost, int(tport)), timeout=10)
        upstream.settimeout(None)
    except OSError as e:
        sys.stderr.write(f"failed to connect to [{host}]:{port}: {e}\n")
        sys.stderr.flush()
        client.close()
        return
    t1 = threading.Thread(target=_pipe, args=(client, upstream), daemon=True)
    t2 = threading.Thread(target=_pipe, args=(upstream, client), daemon=True)
    t1.start()
    t2.start()
    t1.join()
    t2.join()
    client.close()
    upstream.close()


def run_proxy(home: Path, st: dict, *, host: str, local_port: int, remote_port: int, bind: str,
              watch_stdin: bool) -> int:
    if not host_known(home, st, host):
        raise FlyError(f"lookup {host} on fdaa::3: no such host")
    family = socket.AF_INET6 if ":" in bind else socket.AF_INET
    srv = socket.socket(family, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        srv.bind((bind, local_port))
    except OSError as e:
        raise FlyError(f"failed to listen on {bind}:{local_port}: {e.strerror or e}") from None
    srv.listen(64)
    port = srv.getsockname()[1]
    done = threading.Event()

    def stop(*_):
        done.set()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)

    def accept_loop():
        while not done.is_set():
            try:
                client, _ = srv.accept()
            except OSError:
                return
            threading.Thread(target=_handle, args=(home, client, host, remote_port), daemon=True).start()

    threading.Thread(target=accept_loop, daemon=True).start()
    if watch_stdin:
        def watch():
            try:
                while os.read(0, 4096):
                    pass
            except OSError:
                pass
            done.set()
        threading.Thread(target=watch, daemon=True).start()
    sys.stdout.write(f"Proxying localhost:{port} to remote [{host}]:{remote_port}\n")
    sys.stdout.flush()
    while not done.wait(0.2):
        pass
    try:
        srv.close()
    except OSError:
        pass
    return 0
