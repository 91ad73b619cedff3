"""The service fixtures themselves: each one is real and reachable."""

import socket
import urllib.request

import psycopg
import pytest

from flyops.db.scratch import ScratchCluster
from flyops.errors import PreconditionFailed


def test_pg_is_a_real_server(pg):
    with psycopg.connect(pg.url().reveal()) as c:
        assert c.execute("SHOW server_version_num").fetchone()[0].isdigit()


def test_pg_needs_the_password_over_tcp(pg):
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(f"postgresql://postgres:wrong@127.0.0.1:{pg.port}/postgres")


def test_scratch_cluster_removes_its_folder_and_frees_the_port():
    cluster = ScratchCluster().start()
    folder, port = cluster.dir, cluster.port
    cluster.stop()
    assert not folder.exists()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))  # would fail with EADDRINUSE if the postmaster were alive
    cluster.stop()  # idempotent


def test_scratch_cluster_cleans_up_when_the_body_fails():
    with pytest.raises(RuntimeError):
        with ScratchCluster() as cluster:
            folder = cluster.dir
            raise RuntimeError("boom")
    assert not folder.exists()


def test_missing_binaries_is_a_precondition_with_a_fix(tmp_path):
    with pytest.raises(PreconditionFailed) as e:
        ScratchCluster(major=1).start()
    assert "scripts/setup" in e.value.fix


def test_redis_requires_its_password(redis_server):
    with socket.create_connection((redis_server.host, redis_server.port)) as s:
        s.sendall(b"*1\r\n$4\r\nPING\r\n")
        assert s.recv(100).startswith(b"-NOAUTH")


def test_s3_bucket_exists(s3):
    import boto3

    client = boto3.client("s3", endpoint_url=s3.endpoint, region_name=s3.region,
                          aws_access_key_id=s3.access_key, aws_secret_access_key=s3.secret_key.reveal())
    assert s3.bucket in [b["Name"] for b in client.list_buckets()["Buckets"]]
    assert urllib.request.urlopen(s3.endpoint + "/").status == 200


def test_sshd_accepts_the_generated_key(sshd):
    from fabric import Connection

    with Connection(sshd.host, user=sshd.user, port=sshd.port,
                    connect_kwargs={"key_filename": str(sshd.key_path), "look_for_keys": False,
                                    "allow_agent": False}) as c:
        assert c.run("id -un", hide=True, in_stream=False).stdout.strip() == "root"


def test_sigterm_tears_the_scratch_cluster_down(tmp_path):
    import os
    import signal
    import sys
    import time
    from pathlib import Path

    import sh

    code = (
        "import sys, time\n"
        "from flyops.db.scratch import ScratchCluster\nfrom flyops.procs import sigterm_as_interrupt\n"
        "with sigterm_as_interrupt(), ScratchCluster() as c:\n"
        "    print(c.dir, flush=True)\n"
        "    time.sleep(600)\n"
    )
    lines: list[str] = []
    proc = sh.Command(sys.executable)("-c", code, _bg=True, _bg_exc=False, _out=lines.append,
                                      _env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])})
    while not lines and proc.is_alive():
        time.sleep(0.1)  # polling for the child's first line, not a timed assertion
    folder = Path(lines[0].strip())
    assert folder.exists()
    proc.signal(signal.SIGTERM)
    try:
        proc.wait()
    except sh.ErrorReturnCode:
        pass
    assert not folder.exists()
