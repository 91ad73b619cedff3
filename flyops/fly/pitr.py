"""The platform's point-in-time backups, as one interface over two Fly products.

Fly keeps continuous (WAL-based) backups for two kinds of Postgres, and restores both only
into a *new* cluster, never in place:

* unmanaged flex clusters with WAL archiving to Tigris (`fly postgres backup enable`,
  `fly postgres backup restore NEW-APP --restore-target-time ...`,
  flyctl internal/command/postgres/backup.go);
* Managed Postgres (`fly mpg backup list`, `fly mpg restore --pitr-time ...`,
  flyctl internal/command/mpg/backup.go, restore.go).

`PlatformBackups` is what the drill, `db.list`, `db.verify --level fresh` and deploy's restore
point use; each product implements it next to its flyctl argv builders.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from flyops.secret import Secret


@dataclass(frozen=True)
class RestoreWindow:
    """What the platform says it can restore: times are timezone-aware UTC, None when unknown."""

    product: str  # "flex" | "mpg"
    cluster: str  # app name (flex) or cluster id (mpg)
    earliest: datetime | None
    latest: datetime | None
    last_full: datetime | None


@dataclass(frozen=True)
class RestoredCluster:
    """A new cluster the platform restored into; `name` is what `destroy` removes."""

    product: str
    name: str
    requested_at: datetime | None  # the target time asked for (None: latest / a backup id)


class PlatformBackups(Protocol):
    product: str  # "flex" | "mpg"
    cluster: str  # the app (flex) or cluster id (mpg) whose backups these are

    def window(self) -> RestoreWindow: ...

    def restore(self, *, at: datetime | None, new_name: str) -> RestoredCluster: ...

    def connect(self, restored: RestoredCluster) -> AbstractContextManager[Secret]: ...  # admin libpq URL

    def destroy(self, restored: RestoredCluster) -> None: ...  # idempotent: absent is fine


def rfc3339(at: datetime) -> str:
    """A restore target time as flyctl passes it on (Go's time.RFC3339 parse takes fractions)."""
    if at.tzinfo is None:
        raise ValueError("a restore target time must be timezone-aware")
    at = at.astimezone(UTC)
    text = at.strftime("%Y-%m-%dT%H:%M:%S")
    if at.microsecond:
        text += f".{at.microsecond:06d}".rstrip("0")
    return text + "Z"

