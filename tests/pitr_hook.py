#!/usr/bin/env python3
"""The stand-in's data plane for point-in-time restores: REAL PostgreSQL recovery.

    pitr_hook.py restore --product P --source APP --target NEW --at RFC3339|latest|name:ID --home H
    pitr_hook.py destroy --product P --target NEW --home H
    pitr_hook.py backup  --product P --source APP --home H     (a base backup; prints barman's JSON fields)

A source is registered by the test fixture in `H/pitr/sources/<APP>.json`: {bindir, socket_dir,
port, archive_dir (the "bucket": archive_command copies every WAL segment there), base_dir,
run_as}. Base backups are `pg_basebackup` copies in base_dir/<id>, listed in the stand-in's catalogue
(`state.json` app["pg_backups"]["backups"], what `fly pg backup list` prints).

`restore` does what postgres-flex does in the new machine (internal/flypg/barman_restore.go): pick
the newest DONE base backup that ended before the target (resolveBackupFromTime; `latest`: now;
`name:ID`: by id or alias), copy it, write recovery.signal with restore_command from the archive,
recovery_target_time/_name, recovery_target_inclusive and recovery_target_action = promote, start
the server (as the unprivileged user, on a free port), wait until pg_is_in_recovery() is false,
set the postgres password to the new app's OPERATOR_PASSWORD (setupCredentials), stop and start
it again (walReplayAndReset stops its recovery postgres; the machine then boots normally), and map
`<NEW>.internal:5432` in H/services.json so `fly proxy` reaches it. Its record
(H/pitr/restored/<NEW>.json, with the hook's pid) is written before the server exists, so
`destroy` can always clean up: it kills a restore still running, stops the server, removes its
data and the mapping. A restore that fails (or is interrupted) removes what it made itself.

`--product mpg` (the stand-in's `fly mpg restore`, tests/fakefly/fakefly/mpg.py): the source is
the cluster id; its base backups are the cluster's `backups` in the stand-in's state (a test adds
each `backup` this hook took, with its `_path`); `--at backup:ID` restores that base backup to its
consistent point; the new cluster keeps the source's credentials (as the stand-in copies them), and
it is reached at `<its direct IP>:5432`, the key `fly mpg proxy` looks up.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "fakefly"))

from fakefly import state as S  # noqa: E402

PORT = 5432


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as(run_as: str | None, argv: list[str]) -> list[str]:
    return ["runuser", "-u", run_as, "--", *argv] if run_as else argv


def _run(run_as, argv, cwd="/", check=True) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    p = subprocess.run(_as(run_as, argv), cwd=cwd, env=env, capture_output=True, text=True)
    if check and p.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:2])} failed: {(p.stdout + p.stderr).strip()[-1500:]}")
    return p


def _chown(path: Path, run_as: str | None) -> None:
    if run_as:
        pw = pwd.getpwnam(run_as)
        for p in [path, *path.rglob("*")]:
            os.chown(p, pw.pw_uid, pw.pw_gid)


@contextlib.contextmanager
def _locked(home: Path):
    fd = os.open(home / "pitr" / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _services(home: Path, key: str, value: str | None) -> None:
    with _locked(home):
        path = home / "services.json"
        data = json.loads(path.read_text()) if path.exists() else {}
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1))
        os.replace(tmp, path)


def _source(home: Path, app: str) -> dict:
    p = home / "pitr" / "sources" / f"{app}.json"
    if not p.exists():
        raise SystemExit(f"no WAL archive registered for {app} (expected {p})")
    return json.loads(p.read_text())


def _barman_time(text: str) -> datetime:
    return datetime.strptime(" ".join(text.split()), "%a %b %d %H:%M:%S %Y").replace(tzinfo=UTC)


def _psql(src: dict, sql: str, *, socket_dir=None, port=None, db="postgres") -> str:
    p = _run(src.get("run_as"), [str(Path(src["bindir"]) / "psql"), "-X", "-At", "-v", "ON_ERROR_STOP=1",
                                 "-h", str(socket_dir or src["socket_dir"]), "-p", str(port or src["port"]),
                                 "-U", "postgres", "-d", db, "-c", sql])
    return p.stdout.strip()


# -- backup ------------------------------------------------------------------------------------


def backup(home: Path, source: str) -> None:
    src = _source(home, source)
    now = datetime.now(UTC)
    bid = now.strftime("%Y%m%dT%H%M%S")
    dest = Path(src["base_dir"]) / bid
    begin_wal = _psql(src, "SELECT pg_walfile_name(pg_current_wal_lsn())")
    _run(src.get("run_as"), [str(Path(src["bindir"]) / "pg_basebackup"), "-h", src["socket_dir"], "-p",
                             str(src["port"]), "-U", "postgres", "-D", str(dest), "-X", "none", "-c", "fast",
                             "--no-sync"])
    end = datetime.now(UTC)
    # the WAL the backup needs (up to its end) must reach the archive before it is usable
    _psql(src, "SELECT pg_switch_wal()")
    end_wal = _psql(src, "SELECT pg_walfile_name(pg_current_wal_lsn())")
    print(json.dumps({"backup_id": bid, "status": "DONE", "begin_time": now.replace(tzinfo=None).ctime(),
                      "end_time": end.replace(tzinfo=None).ctime(), "begin_wal": begin_wal, "end_wal": end_wal,
                      "_path": str(dest)}))


# -- restore -----------------------------------------------------------------------------------


def _pick(backups: list[dict], at: str) -> dict:
    done = [b for b in backups if b.get("status") == "DONE" and b.get("_path")]
    if not done:
        raise SystemExit("no backups found")
    if at.startswith("name:"):
        want = at[5:]
        for b in done:
            if want in (b["backup_id"], b.get("backup_name")):
                return b
        raise SystemExit(f"no backup found with id/name {want}")
    target = datetime.now(UTC) if at == "latest" else datetime.fromisoformat(at.replace("Z", "+00:00"))
    # resolveBackupFromTime: the newest DONE backup that ended before the target, else the first
    before = [b for b in done if _barman_time(b["end_time"]) < target]
    return max(before, key=lambda b: _barman_time(b["end_time"])) if before else done[0]


def _mpg_catalogue(st: dict, cluster_id: str) -> list[dict]:
    """The stand-in's MPG backups in the shape _pick reads (barman's fields)."""
    c = ((st.get("mpg") or {}).get("clusters") or {}).get(cluster_id) or {}
    out = []
    for b in c.get("backups") or []:
        stop = datetime.fromisoformat(b["stop"].replace("Z", "+00:00"))
        out.append({"backup_id": b["id"], "status": "DONE" if b["status"] == "completed" else b["status"],
                    "end_time": stop.replace(tzinfo=None).ctime(), "_path": b.get("_path")})
    return out


def _service_key(st: dict, product: str, target: str) -> str:
    if product == "mpg":
        return f"{st['mpg']['clusters'][target]['direct']}:{PORT}"
    return f"{target}.internal:{PORT}"


def restore(home: Path, source: str, target: str, at: str, product: str = "flex") -> None:
    src = _source(home, source)
    st = S.load(home)
    if product == "mpg":
        catalogue = _mpg_catalogue(st, source)
        at = "name:" + at[len("backup:"):] if at.startswith("backup:") else at
    else:
        catalogue = ((st["apps"].get(source) or {}).get("pg_backups") or {}).get("backups") or []
    chosen = _pick(catalogue, at)
    work = Path(tempfile.mkdtemp(prefix=f"pitr-{target}-", dir=src.get("restore_root")))
    record = home / "pitr" / "restored" / f"{target}.json"
    record.parent.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    info = {"pid": os.getpid(), "dir": str(work), "port": port, "bindir": src["bindir"], "run_as": src.get("run_as"),
            "source": source, "at": at, "base_backup": chosen["backup_id"],
            "service": _service_key(st, product, target)}
    record.write_text(json.dumps(info))
    try:
        _recover(home, src, info, chosen, at, target)
    except BaseException:
        _teardown(home, target, info)
        raise


def _recover(home: Path, src: dict, info: dict, chosen: dict, at: str, target: str) -> None:
    run_as = src.get("run_as")
    work = Path(info["dir"])
    data, sock = work / "data", work / "sock"
    shutil.copytree(chosen["_path"], data)
    sock.mkdir()
    os.chmod(data, 0o700)
    (data / "postmaster.pid").unlink(missing_ok=True)
    conf = {
        "port": str(info["port"]), "listen_addresses": "'127.0.0.1'", "unix_socket_directories": f"'{sock}'",
        "archive_mode": "off",
        "restore_command": f"'cp {src['archive_dir']}/%f %p'",
        "recovery_target_action": "'promote'",
    }
    if at.startswith("name:"):
        conf["recovery_target"] = "'immediate'"  # a named base backup: its consistent point
    elif at != "latest":
        # barman.go formatTimestamp: RFC 3339 -> "2006-01-02T15:04:05-07:00" (whole seconds, a numeric
        # offset: PostgreSQL checks the setting before it has loaded time zone abbreviations such as Z)
        ts = datetime.fromisoformat(at.replace("Z", "+00:00"))
        conf["recovery_target_time"] = f"'{ts.strftime('%Y-%m-%dT%H:%M:%S%z')[:-2]}:{ts.strftime('%z')[-2:]}'"
        # flyctl sends targetInclusive=true or nothing (resolveRestoreTarget); PostgreSQL's default is on
        conf["recovery_target_inclusive"] = "on"
    with open(data / "postgresql.auto.conf", "a") as f:
        f.write("".join(f"{k} = {v}\n" for k, v in conf.items()))
    (data / "recovery.signal").write_text("")
    _chown(work, run_as)
    pg_ctl = str(Path(src["bindir"]) / "pg_ctl")
    log = work / "server.log"
    p = _run(run_as, [pg_ctl, "-D", str(data), "-l", str(log), "-w", "-t", "120", "start"], cwd=str(work), check=False)
    if p.returncode != 0:
        raise SystemExit(f"recovery of {target} failed: {log.read_text(errors='replace')[-1500:]}")
    deadline = time.monotonic() + 120
    while _psql(src, "SELECT pg_is_in_recovery()", socket_dir=sock, port=info["port"]) != "f":
        if time.monotonic() > deadline:
            raise SystemExit(f"{target} did not leave recovery: {log.read_text(errors='replace')[-1500:]}")
        time.sleep(0.2)
    password = (((S.load(home)["apps"].get(target) or {}).get("secrets") or {}).get("OPERATOR_PASSWORD") or {}).get("value")
    if password:
        _psql(src, "ALTER ROLE postgres PASSWORD '" + password.replace("'", "''") + "'", socket_dir=sock,
              port=info["port"])
    # walReplayAndReset stops the recovery postgres; the machine then starts it normally
    _run(run_as, [pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop"], cwd=str(work))
    _run(run_as, [pg_ctl, "-D", str(data), "-l", str(log), "-w", "-t", "60", "start"], cwd=str(work))
    _services(home, info["service"], f"127.0.0.1:{info['port']}")


# -- destroy -----------------------------------------------------------------------------------


def _teardown(home: Path, target: str, info: dict) -> None:
    pid = info.get("pid")
    if pid and pid != os.getpid():
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
            for _ in range(200):
                os.kill(pid, 0)
                time.sleep(0.05)
    work = Path(info["dir"])
    data = work / "data"
    for _ in range(20):  # a postmaster a killed pg_ctl had just forked writes its pid file soon
        if (data / "postmaster.pid").exists():
            _run(info.get("run_as"), [str(Path(info["bindir"]) / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w",
                                      "stop"], cwd="/", check=False)
            pid_line = (data / "postmaster.pid").read_text().splitlines()[:1] if (data / "postmaster.pid").exists() else []
            if pid_line:
                with contextlib.suppress(ProcessLookupError, ValueError, PermissionError):
                    os.kill(int(pid_line[0]), signal.SIGKILL)
            break
        if not work.exists():
            break
        time.sleep(0.05)
    shutil.rmtree(work, ignore_errors=True)
    _services(home, info.get("service") or f"{target}.internal:{PORT}", None)
    (home / "pitr" / "restored" / f"{target}.json").unlink(missing_ok=True)


def destroy(home: Path, target: str) -> None:
    record = home / "pitr" / "restored" / f"{target}.json"
    if record.exists():
        _teardown(home, target, json.loads(record.read_text()))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="pitr_hook")
    ap.add_argument("action", choices=["restore", "destroy", "backup"])
    ap.add_argument("--product", required=True)
    ap.add_argument("--source")
    ap.add_argument("--target")
    ap.add_argument("--at", default="latest")
    ap.add_argument("--home", required=True)
    a = ap.parse_args(argv)
    home = Path(a.home)
    (home / "pitr").mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        if a.action == "restore":
            restore(home, a.source, a.target, a.at, a.product)
        elif a.action == "destroy":
            destroy(home, a.target)
        else:
            backup(home, a.source)
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
