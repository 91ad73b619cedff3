"""The host scripts' pipes close when the script exits.

The restore and backup scripts run a progress loop in the background (`while sleep 0.5`) and
kill it in their EXIT trap. A loop killed mid-sleep leaves its `sleep` running; when that
`sleep` holds the script's stdout/stderr, the caller (LocalHost through `sh`, SshHost through
fabric) waits for the pipe's end, up to 0.5 s after every restore and backup. The check is
not timed: right after bash has exited, no `sleep` may hold either pipe (the loop is asleep
nearly all the time, so with the old loop one always did)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from flyops.db.backup import backup_script
from flyops.db.restore import restore_script


def _pipe_id(fd: int) -> str:
    return os.readlink(f"/proc/self/fd/{fd}")  # "pipe:[inode]"


def _holders(pipes: set[str]) -> list[str]:
    """Names of the processes other than this one with one of `pipes` open."""
    names = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            fds = [os.readlink(fd) for fd in (proc / "fd").iterdir()]
            if pipes & set(fds):
                names.append((proc / "comm").read_text().strip())
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return names


def _sleeps_left(script: str, tmp_path: Path) -> list[str]:
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    p = subprocess.Popen(["bash", "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                         start_new_session=True)
    try:
        pipes = {_pipe_id(p.stdout.fileno()), _pipe_id(p.stderr.fileno())}
        rc = p.wait(timeout=60)
        left = [n for n in _holders(pipes) if n == "sleep"]
        out, _err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    assert rc == 0, out
    return left


def test_restore_script_leaves_no_sleep_on_its_pipes(tmp_path):
    # a 3-byte "dump" fetched by printf; every pg_restore step is `true`: only the script's own machinery runs
    script = restore_script(["printf", "abc"], 3, ["true", "--jobs=2", "--dbname", "x"])
    assert _sleeps_left(script, tmp_path) == []


def test_backup_script_leaves_no_sleep_on_its_pipes(tmp_path):
    script = backup_script(["printf", "abc"], ["cat"])
    assert _sleeps_left(script, tmp_path) == []
