"""The explicit settings the backup core takes. The task layer builds these from the stack
model and the env file; nothing here reads files or the environment by itself."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from flyops.errors import BadInput
from flyops.secret import Secret
from flyops.stack.model import ENV_NAME

_S3 = re.compile(r"^s3:https?://[A-Za-z0-9.\-\[\]:]+(:\d+)?/[a-z0-9][a-z0-9.\-]{1,62}(/[A-Za-z0-9._\-/]*)?$")


@dataclass(frozen=True)
class RepoConfig:
    """A restic repository: an absolute local folder (on the host that runs the backup) or
    `s3:http(s)://host[:port]/bucket[/prefix]` with keys (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)."""

    location: str
    password: Secret  # RESTIC_PASSWORD
    aws_access_key_id: Secret | None = None
    aws_secret_access_key: Secret | None = None
    region: str | None = None  # S3: `-o s3.region=` (Tigris: "auto"); None lets restic ask the bucket
    append_only: bool = False  # a copy whose keys cannot delete: read it without restic's locks

    def __post_init__(self) -> None:
        loc = self.location
        if loc.startswith("s3:"):
            if not _S3.match(loc):
                raise BadInput(f"repository {loc!r}: expected s3:http(s)://host[:port]/bucket[/prefix]")
            if not (self.aws_access_key_id and self.aws_secret_access_key):
                raise BadInput(f"repository {loc}: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are required",
                               fix="set both in env/<env>.env")
        elif not loc.startswith("/"):
            raise BadInput(f"repository {loc!r}: expected an absolute folder or s3:http(s)://host/bucket/prefix")
        if not self.password:
            raise BadInput(f"repository {loc}: RESTIC_PASSWORD is empty", fix="set RESTIC_PASSWORD in env/<env>.env")

    def secrets(self) -> dict[str, Secret]:
        out = {"RESTIC_PASSWORD": self.password}
        if self.aws_access_key_id and self.aws_secret_access_key:
            out["AWS_ACCESS_KEY_ID"] = self.aws_access_key_id
            out["AWS_SECRET_ACCESS_KEY"] = self.aws_secret_access_key
        return out


@dataclass(frozen=True)
class BackupSource:
    """The database to back up: a direct (not pooled) URL, and the environment it belongs to."""

    url: Secret
    env: str

    def __post_init__(self) -> None:
        if not ENV_NAME.match(self.env):
            raise BadInput(f"environment {self.env!r}: lower-case letters, digits and '-' only")
        from flyops.db.pgconn import parse_url

        parse_url(self.url)  # BadInput now, not halfway through a backup


@dataclass(frozen=True)
class Tools:
    """Binaries on the host that runs the pipeline (override for version pinning or tests)."""

    pg_dump: str = "pg_dump"
    pg_restore: str = "pg_restore"
    restic: str = "restic"
    pg_dumpall: str = "pg_dumpall"  # --roles-only: the roles a backup records (flyops.db.database)


@dataclass(frozen=True)
class Notify:
    """Dead-man's-switch heartbeat (GET on success) and a failure webhook (JSON POST)."""

    heartbeat_url: Secret | None = None
    failure_webhook: Secret | None = None
    timeout: float = 10.0
    extra: dict = field(default_factory=dict)


DEFAULT_TOOLS = Tools()
