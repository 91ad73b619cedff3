"""A safe point before every migration, and the way back to it.

`inv deploy` calls `take` before the first app is deployed, so before web's release command
(`bin/rails db:migrate`, run by `fly deploy` of web, the last dependency wave) can touch the
schema; a safe point that fails stops the deploy with nothing deployed. What it records
depends on `backup.safe_point` and the database's size (`pg_database_size`):

* a **logical backup** (`backup`, or `auto` with the database at most `safe_point_max_mb`):
  the repository's own `db.backup` core (`flyops.db.backup.backup`), pinned, reaching the
  database exactly as `db.backup` does (`fly proxy` or DATABASE_URL: `settings.database_url`);
* otherwise the **time** for a point-in-time restore: the database server's own `now()`, read
  through that same connection (so every transaction the server committed before it is at or
  before that instant on the server's clock, whatever this machine's clock says);
* **nothing** (said so, in the deploy's output and audit line) when the release command will
  not run or cannot change anything new (`skip_reason`), or the stack sets `off`.

The record goes into the deploy's audit line (`details["safe_point"]`), beside each app's
release before and after; `inv rollback --with-data` reads it there:

* a backup is restored into a NEW database next to the live one (`restore_into_new`, the
  `db.restore` core, never over the live database) and compared with its manifest (row counts,
  schema head, extensions, owners, grants: `verify.compare_with_manifest`); only with
  `--confirm <live db>` is the application swapped onto it (`swap`): the live database is
  renamed to `<db>_pre_<time>_<hex>` (kept, nothing dropped) and the restored one takes its
  name, so web and worker keep their DATABASE_URL and reconnect to the restored data. Undo:
  the same two renames the other way round (`undo_sql`);
* a time goes to the platform's point-in-time restore (`flyops.fly.pitr.PlatformBackups`),
  always into a new cluster (`restore_at`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import psycopg

from flyops.db import pgconn
from flyops.db.config import BackupSource, RepoConfig
from flyops.db.hosts import Host, LocalHost
from flyops.db.manifest import _MIGRATION_HEAD
from flyops.errors import PreconditionFailed, VerificationFailed
from flyops.secret import Secret

MB = 1024 * 1024


def skip_reason(setting: str, release_command: str | None, web_selected: bool, web_version: int | None,
                image: str | None, web_image: str) -> str | None:
    """Why no safe point is needed for this deploy (None: one is). Pure.

    * `off` in the stack;
    * web is not part of this deploy (`--only` without it), or has no release command: no
      migration runs;
    * web was never released: its first release migrates an empty database, and there is no
      earlier release for a rollback to go back to;
    * `--image` is the image web already runs: its migrations have already run."""
    if setting == "off":
        return 'backup.safe_point = "off" in the stack'
    if not web_selected:
        return "web is not part of this deploy, so no release command (migration) runs"
    if not release_command:
        return "web has no release_command, so no migration runs"
    if not web_version:
        return "web's first release: there is no earlier release (nor data) to go back to"
    if image and image == web_image:
        return f"web already runs {image}: its migrations have run"
    return None


def choose(setting: str, size_bytes: int, max_mb: int) -> str:
    """"backup" or "time" for a database of `size_bytes` (pure)."""
    if setting in ("backup", "time"):
        return setting
    return "backup" if size_bytes <= max_mb * MB else "time"


def measure(session_url: Secret) -> tuple[int, str, str]:
    """(size in bytes, the server's now() as ISO 8601 UTC, server version) in one session."""
    with pgconn.connect(session_url) as conn:
        size, now, version = conn.execute(
            "SELECT pg_database_size(current_database()), now(), current_setting('server_version')").fetchone()
    return int(size), _iso(now), str(version)


def take(url: Secret, *, env: str, setting: str, max_mb: int, repo: RepoConfig | None, reason: str,
         host: Host | None = None, dry: bool = False) -> dict[str, Any]:
    """Record the safe point of the database at `url`; returns the record for the audit line.

    A backup is pinned (exempt from retention for `retention.pinned_days`) and kind `manual`, so
    `db.list` shows it and `db.restore --backup ID` can use it too. Under `dry` the database is
    measured and the repository checked, and nothing is written."""
    from flyops.db import backup as core
    from flyops.db.restic import Repo

    host = host or LocalHost()
    size, server_now, version = measure(url)
    kind = choose(setting, size, max_mb)
    record: dict[str, Any] = {"kind": kind, "database": pgconn.dbname(url), "size_bytes": size,
                              "max_mb": max_mb, "server_version": version, "server_time": server_now}
    if kind == "time":
        record["at"] = server_now
        return record
    if repo is None:
        raise PreconditionFailed("a logical safe point needs the backup repository", fix="set backup.repository")
    record["repository"] = repo.location
    if dry:
        Repo(repo, host).require()  # a missing repository fails the dry run as it would the deploy
        return record
    manifest = core.backup(BackupSource(url, env), repo, host=host, kind="manual", reason=reason, pinned=True)
    record.update(backup_id=manifest["id"], at=manifest["end"], bytes=manifest["bytes"],
                  schema_migrations_head=manifest.get("schema_migrations_head"))
    return record


def describe(record: dict[str, Any] | None) -> str:
    """One line for people (deploy output, the audit line's `changed`)."""
    if not record:
        return "no safe point"
    if record.get("kind") == "skipped":
        return f"no safe point: {record.get('why')}"
    size = f"{record.get('size_bytes', 0) / MB:.1f} MB"
    if record["kind"] == "backup":
        where = f"backup {record['backup_id']}" if record.get("backup_id") else "a logical backup (pinned)"
        return f"safe point: {where} of {record['database']} ({size}) in {record['repository']}"
    return (f"safe point: time {record['at']} (server clock) for a point-in-time restore of "
            f"{record['database']} ({size} > {record['max_mb']} MB)")


# -- the way back ---------------------------------------------------------------------------


def restore_into_new(record: dict[str, Any], *, env: str, repo: RepoConfig, url: Secret,
                     host: Host | None = None, jobs: int = 2) -> dict[str, Any]:
    """Restore the safe point's backup into a new database on the server of `url` (the live
    database is never touched) and compare it with the backup's manifest. Returns the restore
    result with `verified`; VerificationFailed (the restored copy kept for a look) when it differs."""
    from flyops.db.restore import restore
    from flyops.db.verify import compare_with_manifest

    result = restore(record["backup_id"], env=env, repos={env: repo}, server_url=pgconn.with_dbname(url, "postgres"),
                     target_db=None, host=host or LocalHost(), jobs=jobs)
    check = compare_with_manifest(pgconn.with_dbname(url, result["database"]), result["manifest"])
    result["verified"] = check
    if not check["ok"]:
        raise VerificationFailed(
            f"the restored copy {result['database']} does not match backup {record['backup_id']}: "
            + "; ".join(check["problems"][:5]) + "; nothing was swapped",
            fix=f"look at database {result['database']} (kept); the live database was not touched")
    return result


def swap(url: Secret, live: str, restored: str, now: datetime | None = None) -> str:
    """Put `restored` in the place of `live` by renaming (connections to `live` are ended
    first); `live` is kept under a new name, which is returned. Nothing is dropped."""
    from flyops.db.restore import _swap, new_database_name

    old = new_database_name(live, "pre", now)
    with _admin(url) as admin:
        for name in (live, restored):
            if admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
                raise PreconditionFailed(f"database {name!r} does not exist on {pgconn.display(url)}; nothing was swapped")
        _swap(admin, live, restored, old)
    return old


def undo_sql(live: str, old: str, restored_as: str) -> list[str]:
    """The statements that put the pre-swap database back (for the operator, printed)."""
    def q(name: str) -> str:
        return '"' + name.replace('"', '""') + '"'

    return [f"ALTER DATABASE {q(live)} RENAME TO {q(restored_as)};",
            f"ALTER DATABASE {q(old)} RENAME TO {q(live)};"]


@contextlib.contextmanager
def _admin(url: Secret) -> Iterator[psycopg.Connection]:
    conn = pgconn.connect(pgconn.with_dbname(url, "postgres"))
    try:
        yield conn
    finally:
        conn.close()


def restore_at(record: dict[str, Any], platform, new_name: str) -> dict[str, Any]:
    """A time safe point: the platform's point-in-time restore (`PlatformBackups`) into the new
    cluster `new_name`, which is then connected to and its Rails schema head read. The cluster is
    kept: it is what the application would be moved to. Raises what the platform raises."""
    at = datetime.fromisoformat(record["at"].replace("Z", "+00:00"))
    window = platform.window()
    if window.earliest and at < window.earliest:
        raise PreconditionFailed(f"the safe point {record['at']} is older than the platform's restore window "
                                 f"(earliest {_iso(window.earliest)}); nothing was restored")
    restored = platform.restore(at=at, new_name=new_name)
    with platform.connect(restored) as admin_url:
        with pgconn.connect(pgconn.with_dbname(admin_url, record["database"])) as conn:
            version = None
            if conn.execute("SELECT to_regclass('public.schema_migrations') IS NOT NULL").fetchone()[0]:
                row = conn.execute(_MIGRATION_HEAD).fetchone()
                version = row[0] if row else None
    return {"cluster": restored.name, "product": restored.product, "requested_at": record["at"],
            "schema_migrations_head": version}


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")



# -- inv deploy's side ------------------------------------------------------------------------


def for_deploy(stack, runner, *, web: str | None, web_version: int | None, web_image: str, image: str | None,
               release: str, say) -> dict[str, Any]:
    """The safe point of one deploy: skipped (with why) or taken, as the audit line records it.

    `web` is web's component name when this deploy includes it; `web_version` and `web_image`
    what it runs now (read in the deploy's preflight). Reaches the database the way `db.backup`
    does. Any failure is re-raised with its own exit code, saying that nothing was deployed."""
    from flyops.db import settings as from_stack
    from flyops.errors import OpsError
    from flyops.stack.envfile import load_env

    setting = stack.backup.safe_point
    web_app = stack.apps.get(web) if web else None
    why = skip_reason(setting, web_app.release_command if web_app else None, web_app is not None,
                      web_version, image, web_image)
    if why:
        record: dict[str, Any] = {"kind": "skipped", "why": why}
        say(describe(record))
        return record
    try:
        envfile = load_env(stack.root, stack.env, must_exist=True)
        repo = from_stack.repo_config(stack, envfile) if setting != "time" else None
        if repo is not None:
            runner.add_masks(list(repo.secrets().values()))
        with from_stack.database_url(stack, envfile, runner if stack.database.source == "fly" else None) as url:
            record = take(url, env=stack.env, setting=setting, max_mb=stack.backup.safe_point_max_mb, repo=repo,
                          reason=f"safe point before the migrations of {release}", dry=runner.dry)
    except OpsError as exc:
        hint = 'or set backup.safe_point = "time" (or "off") in the stack to deploy without a backup'
        message = exc.message.replace("; nothing was changed", "")
        raise OpsError(f"the safe point before web's migrations failed: {message}; nothing was deployed",
                       fix=f"{exc.fix}; {hint}" if exc.fix else f"inv db.backup --env {stack.env} shows the same; {hint}",
                       code=exc.code) from None
    say(("[dry] would record " if runner.dry else "") + describe(record))
    return record
