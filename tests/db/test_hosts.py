"""LocalHost and SshHost run the same script the same way; secrets come from stdin, never argv."""

import hashlib

import pytest

from flyops.errors import BadInput, OpsError
from flyops.hosts import LocalHost, SshHost, prepare
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
