"""Real services for the tests, started once per session (a pytest plugin).

Registered from tests/conftest.py with `pytest_plugins = ["tests.services"]`.

    pg            a ScratchCluster (PostgreSQL in a temp folder, run as the `postgres` user)
    redis_server  redis-server on a free port, with a password
    s3            moto's standalone S3 server on a free port, one bucket created
    sshd          /usr/sbin/sshd on a free port, root login with a generated key

Nothing is skipped: a missing binary fails the test with the package scripts/setup installs.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
import sh

from flyops.db.scratch import ScratchCluster
from flyops.procs import free_port
from flyops.secret import Secret


def _need(binary: str, package: str) -> str:
    path = binary if os.path.isabs(binary) and os.access(binary, os.X_OK) else shutil.which(binary)
    if not path:
        pytest.fail(f"{binary} not found: scripts/setup installs it (package {package})", pytrace=False)
    return path


def _wait_for(check, what: str, log: Path | None = None, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception as e:  # noqa: BLE001 - keep polling until the deadline
            last = e
        time.sleep(0.1)
    tail = log.read_text(errors="replace")[-2000:] if log and log.exists() else ""
    pytest.fail(f"{what} did not become ready ({last}); log tail:\n{tail}", pytrace=False)


@contextlib.contextmanager
def _daemon(argv: list[str], log: Path) -> Iterator[sh.RunningCommand]:
    proc = sh.Command(argv[0])(*argv[1:], _bg=True, _bg_exc=False, _out=str(log), _err_to_out=True)
    try:
        yield proc
    finally:
        with contextlib.suppress(Exception):
            proc.terminate()
        with contextlib.suppress(Exception):
            proc.wait(timeout=10)
        with contextlib.suppress(Exception):
            proc.kill()


# -- PostgreSQL -------------------------------------------------------------------------


@pytest.fixture(scope="session")
def pg() -> Iterator[ScratchCluster]:
    _need("runuser", "util-linux") if os.geteuid() == 0 else None
    with ScratchCluster() as cluster:
        yield cluster


@pytest.fixture
def make_db(pg: ScratchCluster):
    """Factory: make_db("name") -> a fresh empty database on `pg`; dropped after the test."""
    made: list[str] = []

    def make(prefix: str = "t") -> str:
        name = f"{prefix}_{secrets.token_hex(4)}"
        with psycopg.connect(pg.url().reveal(), autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{name}"')
        made.append(name)
        return name

    yield make
    with psycopg.connect(pg.url().reveal(), autocommit=True) as c:
        for row in c.execute("SELECT datname FROM pg_database WHERE datname LIKE ANY(%s)",
                             ([f"{n}%" for n in made],)).fetchall():
            c.execute(f'DROP DATABASE IF EXISTS "{row[0]}" WITH (FORCE)')


# -- Redis ------------------------------------------------------------------------------


@dataclass(frozen=True)
class RedisService:
    host: str
    port: int
    password: Secret

    @property
    def url(self) -> Secret:
        return Secret(f"redis://:{self.password.reveal()}@{self.host}:{self.port}/0")


def _redis_ping(host: str, port: int, password: str) -> bool:
    with socket.create_connection((host, port), timeout=2) as s:
        s.sendall(f"*2\r\n$4\r\nAUTH\r\n${len(password)}\r\n{password}\r\n*1\r\n$4\r\nPING\r\n".encode())
        data = b""
        while data.count(b"\r\n") < 2:
            chunk = s.recv(1024)
            if not chunk:
                break
            data += chunk
        return data == b"+OK\r\n+PONG\r\n"


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisService]:
    binary = _need("redis-server", "redis-server")
    with tempfile.TemporaryDirectory(prefix="flyops-redis-") as tmp:
        port, password = free_port(), secrets.token_urlsafe(18)
        conf = Path(tmp) / "redis.conf"
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # the password stays out of argv
        with os.fdopen(fd, "w") as f:
            f.write(f'bind 127.0.0.1\nport {port}\ndir "{tmp}"\nrequirepass "{password}"\n'
                    'save ""\nappendonly no\ndaemonize no\nprotected-mode yes\n')
        log = Path(tmp) / "redis.log"
        with _daemon([binary, str(conf)], log):
            _wait_for(lambda: _redis_ping("127.0.0.1", port, password), "redis-server", log)
            yield RedisService("127.0.0.1", port, Secret(password))


# -- S3 (moto server) -------------------------------------------------------------------


@dataclass(frozen=True)
class S3Service:
    endpoint: str  # http://127.0.0.1:PORT
    bucket: str
    access_key: str
    secret_key: Secret
    region: str = "us-east-1"

    def restic_location(self, prefix: str) -> str:
        return f"s3:{self.endpoint}/{self.bucket}/{prefix}"


@pytest.fixture(scope="session")
def s3() -> Iterator[S3Service]:
    local = Path(sys.executable).parent / "moto_server"
    binary = _need(str(local) if local.exists() else "moto_server", "moto[server] in the virtualenv")
    with tempfile.TemporaryDirectory(prefix="flyops-s3-") as tmp:
        port = free_port()
        endpoint = f"http://127.0.0.1:{port}"
        log = Path(tmp) / "moto.log"
        with _daemon([binary, "-H", "127.0.0.1", "-p", str(port)], log):
            _wait_for(lambda: urllib.request.urlopen(endpoint + "/", timeout=2).status == 200, "moto_server", log)
            import boto3  # moto brings boto3

            svc = S3Service(endpoint, "flyops-backups", "AKIDTESTFLYOPS", Secret(secrets.token_urlsafe(24)))
            client = boto3.client("s3", endpoint_url=endpoint, region_name=svc.region,
                                  aws_access_key_id=svc.access_key, aws_secret_access_key=svc.secret_key.reveal())
            client.create_bucket(Bucket=svc.bucket)
            yield svc


@dataclass(frozen=True)
class AppendOnlyS3:
    """A second moto server, with IAM enforced (signatures checked, policies applied: moto's
    core/authorization.py `_authenticate_and_authorize_action`, on once INITIAL_NO_AUTH_ACTION_COUNT
    requests have been served): a versioned bucket, an `owner` key that may do anything and a
    `writer` key whose policy has no s3:DeleteObject / s3:DeleteObjectVersion."""

    endpoint: str
    bucket: str
    owner: tuple[str, Secret]
    writer: tuple[str, Secret]


# the set-up requests served before moto starts enforcing IAM (each counts one)
_SETUP_REQUESTS = 8


@pytest.fixture(scope="session")
def s3_append_only() -> Iterator[AppendOnlyS3]:
    import json

    local = Path(sys.executable).parent / "moto_server"
    binary = _need(str(local) if local.exists() else "moto_server", "moto[server] in the virtualenv")
    with tempfile.TemporaryDirectory(prefix="flyops-s3ao-") as tmp:
        port = free_port()
        endpoint = f"http://127.0.0.1:{port}"
        log = Path(tmp) / "moto.log"
        os.environ["INITIAL_NO_AUTH_ACTION_COUNT"] = str(_SETUP_REQUESTS)
        try:
            with _daemon([binary, "-H", "127.0.0.1", "-p", str(port)], log):
                os.environ.pop("INITIAL_NO_AUTH_ACTION_COUNT", None)
                # a TCP connect, not a request: every request before the set-up would count
                _wait_for(lambda: socket.create_connection(("127.0.0.1", port), timeout=2).close() is None,
                          "moto_server (IAM)", log)
                import boto3

                anon = {"endpoint_url": endpoint, "region_name": "us-east-1", "aws_access_key_id": "setup",
                        "aws_secret_access_key": "setup"}
                iam, s3c = boto3.client("iam", **anon), boto3.client("s3", **anon)
                bucket = "flyops-offsite"

                def user(name: str, actions: list[str] | str) -> tuple[str, Secret]:
                    iam.create_user(UserName=name)
                    iam.put_user_policy(UserName=name, PolicyName=name, PolicyDocument=json.dumps({
                        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": actions, "Resource": "*"}]}))
                    key = iam.create_access_key(UserName=name)["AccessKey"]
                    return key["AccessKeyId"], Secret(key["SecretAccessKey"])

                s3c.create_bucket(Bucket=bucket)
                s3c.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
                owner = user("owner", "*")
                writer = user("writer", ["s3:GetObject", "s3:PutObject", "s3:ListBucket", "s3:GetBucketLocation"])
                yield AppendOnlyS3(endpoint, bucket, owner, writer)
        finally:
            os.environ.pop("INITIAL_NO_AUTH_ACTION_COUNT", None)


# -- sshd -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SshService:
    host: str
    port: int
    user: str
    key_path: Path

    @property
    def target(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"


@pytest.fixture(scope="session")
def sshd() -> Iterator[SshService]:
    binary = _need("/usr/sbin/sshd", "openssh-server")
    keygen = _need("ssh-keygen", "openssh-client")
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege-separation dir sshd insists on
    with tempfile.TemporaryDirectory(prefix="flyops-sshd-") as tmp:
        t = Path(tmp)
        sh.Command(keygen)("-q", "-t", "ed25519", "-N", "", "-C", "flyops-test-host", "-f", str(t / "host_key"))
        sh.Command(keygen)("-q", "-t", "ed25519", "-N", "", "-C", "flyops-test-client", "-f", str(t / "client_key"))
        (t / "authorized_keys").write_text((t / "client_key.pub").read_text())
        os.chmod(t / "authorized_keys", 0o600)
        port = free_port()
        (t / "sshd_config").write_text(
            f"Port {port}\nListenAddress 127.0.0.1\nHostKey {t / 'host_key'}\nPidFile {t / 'sshd.pid'}\n"
            f"AuthorizedKeysFile {t / 'authorized_keys'}\nPermitRootLogin prohibit-password\n"
            "PubkeyAuthentication yes\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
            "UsePAM no\nStrictModes no\nAllowUsers root\nSubsystem sftp internal-sftp\nLogLevel VERBOSE\n"
        )
        log = t / "sshd.log"

        def banner() -> bool:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                return s.recv(64).startswith(b"SSH-")

        with _daemon([binary, "-D", "-e", "-f", str(t / "sshd_config")], log):
            _wait_for(banner, "sshd", log)
            yield SshService("127.0.0.1", port, "root", t / "client_key")
