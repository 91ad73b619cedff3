"""LocalHost and SshHost run the same script the same way; secrets come from stdin, never argv."""

import hashlib

import pytest

from flyops.db.hosts import LocalHost, SshHost, prepare
from flyops.errors import BadInput, OpsError
from flyops.secret import Secret

SCRIPT = 'printf "%s|%s" "$(printf %s "$A_SECRET" | sha256sum)" "${#B_SECRET}"; echo oops >&2; exit 3\n'
EXPECTED = hashlib.sha256(b" lead and trail ").hexdigest() + "  -|3"


def test_prepare_keeps_secret_values_out_of_the_script():
    full, stdin = prepare(SCRIPT, {"A_SECRET": Secret("value-one"), "B_SECRET": Secret("two two")})
    assert "value-one" not in full and "two two" not in full
    assert stdin == "value-one\ntwo two\n"
    assert "IFS= read -r A_SECRET" in full


def test_prepare_refuses_a_script_carrying_a_secret():
    with pytest.raises(OpsError):
        prepare("echo hunter22", {"PW": Secret("hunter22")})
    with pytest.raises(BadInput):
        prepare("true", {"PW": Secret("a\nb")})


def test_local_host_reads_secrets_from_stdin():
    r = LocalHost().run_script(SCRIPT, {"A_SECRET": Secret(" lead and trail "), "B_SECRET": Secret("x y")})
    assert (r.rc, r.stdout, r.stderr.strip()) == (3, EXPECTED, "oops")


def test_local_output_is_redacted():
    r = LocalHost().run_script('echo "leak: $PW"', {"PW": Secret("s3cr3t-value")})
    assert "s3cr3t-value" not in r.stdout and "leak: ********" in r.stdout


def test_ssh_host_runs_the_same_script(sshd):
    host = SshHost(sshd.host, user=sshd.user, port=sshd.port, key_filename=str(sshd.key_path))
    r = host.run_script(SCRIPT, {"A_SECRET": Secret(" lead and trail "), "B_SECRET": Secret("x y")})
    assert (r.rc, r.stdout, r.stderr.strip()) == (3, EXPECTED, "oops")
    assert host.name == f"root@127.0.0.1:{sshd.port}"


def test_ssh_get_and_put(sshd, tmp_path):
    host = SshHost.parse(sshd.target, key_filename=str(sshd.key_path))
    (tmp_path / "a").write_bytes(b"\x00\x01binary")
    host.put(str(tmp_path / "a"), str(tmp_path / "b"))
    host.get(str(tmp_path / "b"), str(tmp_path / "c"))
    assert (tmp_path / "c").read_bytes() == b"\x00\x01binary"


def test_parse_rejects_garbage():
    with pytest.raises(BadInput):
        SshHost.parse("root@host; rm -rf /")


def test_ssh_host_reaches_the_database_through_a_forwarded_port(sshd, pg):
    """The SQL session of a dump or restore run with --on goes through the SSH connection,
    so a database only the host can reach (a bastion in Fly's network) works too."""
    from flyops.db import pgconn

    host = SshHost.parse(sshd.target, key_filename=str(sshd.key_path))
    url = pg.url("postgres")
    with host.reach(url) as through:
        assert pgconn.address(through)[1] != pg.port and pgconn.address(through)[0] == "127.0.0.1"
        assert pgconn.password(through) == pgconn.password(url)  # same credentials, other address
        with pgconn.connect(through) as conn:
            assert conn.execute("SELECT current_database()").fetchone()[0] == "postgres"
    with LocalHost().reach(url) as same:
        assert same == url


def _interrupted(host, tmp_path, after: float = 1.5) -> int:
    """Run a script that starts a long child and cleans up on exit; interrupt this process (as
    Ctrl-C or SIGTERM do) while it waits; the interrupt must come through within seconds, not
    when the child ends by itself (120 s). Returns the child's pid."""
    import signal
    import time

    def interrupt(signum, frame):  # noqa: ARG001
        raise KeyboardInterrupt

    pid_file, cleaned = tmp_path / "child.pid", tmp_path / "cleaned"
    script = (f"trap 'touch {cleaned}' EXIT\ntrap 'exit 143' TERM\n"
              f"sleep 120 & echo $! > {pid_file}\nwait\n")
    previous = signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, after)
    started = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            host.run_script(script)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert time.monotonic() - started < after + 30, "the interrupt waited for the script to end by itself"
    return int(pid_file.read_text())


def _gone(pid: int, timeout: float = 10) -> bool:
    import time
    from pathlib import Path

    deadline = time.monotonic() + timeout
    while Path(f"/proc/{pid}").exists() and b"sleep" in Path(f"/proc/{pid}/cmdline").read_bytes():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_an_interrupted_local_script_ends_with_its_children_and_cleans_up(tmp_path):
    pid = _interrupted(LocalHost(), tmp_path)
    assert _gone(pid) and (tmp_path / "cleaned").exists()


def test_an_interrupted_ssh_script_ends_on_the_host_too(sshd, tmp_path):
    """Fabric without a pty only closes the channel on Ctrl-C; the host's bash would go on
    (a pg_dump | restic left running on a bastion). The session is found and ended."""
    host = SshHost.parse(sshd.target, key_filename=str(sshd.key_path))
    pid = _interrupted(host, tmp_path)
    assert _gone(pid), "the remote child outlived the interrupt"
    assert (tmp_path / "cleaned").exists()  # its EXIT trap ran
