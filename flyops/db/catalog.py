"""The catalog: what backups a repository holds, read from restic's snapshots and tags.

A backup is a dump snapshot and a manifest snapshot (written after the dump, so a manifest means
a complete backup), plus any verification records; all carry `id=` and `env=` tags. Listing,
`latest`, finding one backup, pins and verification records live here, below both the backup
that writes them (`flyops.db.backup`) and the prune that removes them (`flyops.db.prune`).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from flyops.db.config import DEFAULT_TOOLS, RepoConfig, Tools
from flyops.db.hosts import Host, LocalHost
from flyops.db.manifest import REQUESTED_KINDS, utcnow
from flyops.db.restic import TAG, Repo, explain_failure, tag_value
from flyops.db.retention import Retention
from flyops.errors import BadInput

MANIFEST_FILE = "manifest.json"


VERIFY_FILE = "verify.json"


def manifest_tags(m: dict) -> list[str]:
    """The manifest snapshot's tags: enough for listing without reading every manifest."""
    tags = ["part=manifest", f"id={m['id']}", f"env={m['environment']}", f"kind={m['kind']}",
            f"start={m['start']}", f"end={m['end']}", f"bytes={m['bytes']}", f"added={m['added_bytes']}",
            f"server={m['server_version'].split()[0]}", f"pgdump={m['pg_dump_version']}"]
    if m.get("pinned"):
        tags.append("pinned")
    return tags


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def catalog(repo: Repo, env: str) -> dict[str, dict]:
    """backup id -> {"dump": snap, "manifest": snap, "verify": [snaps]} for one environment."""
    out: dict[str, dict] = {}
    for snap in repo.snapshots(f"env={env}"):
        bid, part = tag_value(snap, "id"), tag_value(snap, "part")
        if not bid or not part:
            continue
        entry = out.setdefault(bid, {"dump": None, "manifest": None, "verify": []})
        if part == "verify":
            entry["verify"].append(snap)
        elif part in ("dump", "manifest"):
            entry[part] = snap
    return out


def backup_row(bid: str, entry: dict) -> dict:
    m = entry["manifest"]
    start, end = _parse_time(tag_value(m, "start")), _parse_time(tag_value(m, "end"))
    verify = None
    if entry["verify"]:
        v = sorted(entry["verify"], key=lambda s: s["time"])[-1]
        verify = {"result": tag_value(v, "result"), "level": tag_value(v, "level"), "at": tag_value(v, "at")}
    return {
        "id": bid,
        "when": start,
        "kind": tag_value(m, "kind"),
        "bytes": int(tag_value(m, "bytes") or 0),
        "added_bytes": int(tag_value(m, "added") or 0),
        "duration_s": (end - start).total_seconds() if start and end else None,
        "server_version": tag_value(m, "server"),
        "pg_dump_version": tag_value(m, "pgdump"),
        "verified": verify,
        "pinned": "pinned" in (m.get("tags") or []),
        "snapshots": [entry["dump"]["id"], m["id"], *[v["id"] for v in entry["verify"]]],
    }


def list_backups(repo_config: RepoConfig, env: str, *, host: Host | None = None, tools: Tools = DEFAULT_TOOLS,
                 retention: Retention | None = None) -> list[dict]:
    """Complete backups of `env`, newest first. With `retention`, each row says whether the next
    prune keeps it and by which rule (`retention` key)."""
    repo = Repo(repo_config, host or LocalHost(), tools)
    rows = [backup_row(bid, e) for bid, e in catalog(repo, env).items() if e["dump"] and e["manifest"]]
    rows.sort(key=lambda r: r["id"], reverse=True)
    if retention is not None:
        from flyops.db.retention import EXPIRY_ASSUMPTION, plan_retention, project_expiry

        now = datetime.now(UTC)
        decisions = plan_retention(rows, retention, now=now)
        expiry = project_expiry(rows, retention, now=now)
        for row in rows:
            when = expiry[row["id"]]
            row["retention"] = {**decisions[row["id"]],
                                "expires": when.strftime("%Y-%m-%dT%H:%M:%SZ") if when else None,
                                "expires_assuming": EXPIRY_ASSUMPTION}
    return rows


#: what `latest` means: the newest backup of the database as it was, never the pinned copy a
#: restore took of the database it was about to replace (that state is the one just given up)
LATEST_KINDS = REQUESTED_KINDS


def latest_tag_args(part: str, env: str, include_pre_restore: bool = False) -> list[str]:
    """`--tag` options selecting `latest`'s candidates: one tag list per kind (restic ORs the
    lists and ANDs the tags inside one, internal/restic/snapshot_find.go), or all kinds."""
    base = f"{TAG},part={part},env={env}"
    if include_pre_restore:
        return ["--tag", base]
    return [a for k in LATEST_KINDS for a in ("--tag", f"{base},kind={k}")]


def find_backup(repo: Repo, env: str, ref: str, *, include_pre_restore: bool = False) -> tuple[dict, dict]:
    """(dump snapshot, manifest snapshot) for an id or `latest` in `env`. BadInput if unknown.
    `latest` skips pre-restore backups unless `include_pre_restore`."""
    cat = {bid: e for bid, e in catalog(repo, env).items() if e["dump"] and e["manifest"]}
    if ref == "latest":
        candidates = [bid for bid, e in cat.items()
                      if include_pre_restore or tag_value(e["manifest"], "kind") in LATEST_KINDS]
        if not candidates:
            raise BadInput(f"there is no complete backup of {env} in {repo.location}"
                           + ("" if include_pre_restore or not cat else " (other than pre-restore copies)"),
                           fix=None if include_pre_restore or not cat else
                           "name a pre-restore backup by its id (see `inv db.list`), or pass --include-pre-restore")
        ref = max(candidates)
    if ref not in cat:
        raise BadInput(f"backup {ref!r} not found among the complete backups of {env} in {repo.location}",
                       fix="see `inv db.list` for ids")
    return cat[ref]["dump"], cat[ref]["manifest"]


def fetch_manifest(repo: Repo, env: str, ref: str, *, include_pre_restore: bool = False,
                   lock: bool = True) -> tuple[str, dict]:
    """(dump snapshot id, manifest) for an id or `latest` in `env`, with ONE restic run
    (`restic dump --tag ... latest /manifest.json`) where find_backup + read_json take two, each
    paying the repository's key derivation. The manifest is written only after its dump, so a
    manifest found means a complete backup; it names its dump snapshot. BadInput if none matches.
    `latest` skips pre-restore backups unless `include_pre_restore`.

    lock=False: `--no-lock`, i.e. without restic's shared lock, whose creation waits 200 ms
    (internal/restic/lock.go `NewLock`: create, sleep `waitBeforeLockCheck`, check again). The
    lock only keeps data-removing commands (prune, forget: exclusive lock) away while it is held
    (doc/design.rst "Locks", "Read and Write Ordering"); a read without it that meets a
    concurrent prune fails (every blob is checked against its hash), it never returns other
    bytes. For a read of a few KiB before anything is changed, that failure is a clean one."""
    if ref == "latest":
        tag_args = latest_tag_args("manifest", env, include_pre_restore)
    else:
        tag_args = ["--tag", f"{TAG},part=manifest,env={env},id={ref}"]
    r = repo.run(*([] if lock else ["--no-lock"]), "dump", *tag_args, "latest", "/" + MANIFEST_FILE,
                 what="dump manifest", check=False)
    if not r.ok:
        if "no snapshot found" in r.stderr:
            what = f"there is no complete backup of {env}" if ref == "latest" else \
                f"backup {ref!r} not found among the complete backups of {env}"
            raise BadInput(f"{what} in {repo.location}", fix="see `inv db.list` for ids")
        raise explain_failure(r, "dump manifest", repo.location)
    manifest = json.loads(r.stdout)
    if not manifest.get("restic_snapshot"):  # written by every version so far; be explicit if not
        dump_snap, _ = find_backup(repo, env, manifest["id"])
        return dump_snap["id"], manifest
    return manifest["restic_snapshot"], manifest


def read_manifest(repo: Repo, env: str, ref: str) -> dict:
    _dump, manifest_snap = find_backup(repo, env, ref)
    return repo.read_json(manifest_snap["id"], MANIFEST_FILE)


def newest_backup_age(repo_config: RepoConfig, env: str, *, host: Host | None = None,
                      tools: Tools = DEFAULT_TOOLS) -> float | None:
    """Seconds since the newest complete backup started (None when there is none)."""
    rows = list_backups(repo_config, env, host=host, tools=tools)
    when = max((r["when"] for r in rows if r["when"]), default=None)
    return (datetime.now(UTC) - when).total_seconds() if when else None


def should_skip(repo_config: RepoConfig, env: str, if_older_than: float, *, host: Host | None = None,
                tools: Tools = DEFAULT_TOOLS) -> bool:
    """`--if-older-than`: True when the newest complete backup is younger than the window."""
    repo = Repo(repo_config, host or LocalHost(), tools)
    if not repo.exists():
        return False
    age = newest_backup_age(repo_config, env, host=host, tools=tools)
    return age is not None and age < if_older_than


def record_verification(repo_config: RepoConfig, env: str, backup_id: str, result: dict, *,
                        host: Host | None = None, tools: Tools = DEFAULT_TOOLS) -> str:
    """Store a verification record (the drill's result) next to the backup; returns its snapshot id.

    `result` should hold at least `ok` (bool) and `level` (decode|integrity|restore)."""
    repo = Repo(repo_config, host or LocalHost(), tools)
    find_backup(repo, env, backup_id)  # BadInput for an unknown id
    at = utcnow()
    record = {"backup_id": backup_id, "environment": env, "recorded_at": at, **result}
    tags = ["part=verify", f"id={backup_id}", f"env={env}", f"result={'pass' if result.get('ok') else 'fail'}",
            f"level={result.get('level', 'unknown')}", f"at={at}"]
    return repo.store_json(VERIFY_FILE, json.loads(json.dumps(record, default=str)), tags, env)


def pin(repo_config: RepoConfig, env: str, backup_id: str, *, host: Host | None = None, tools: Tools = DEFAULT_TOOLS) -> None:
    """Exempt a backup from retention (`pinned` tag on its manifest snapshot)."""
    repo = Repo(repo_config, host or LocalHost(), tools)
    _dump, m = find_backup(repo, env, backup_id)
    repo.add_tags(m["id"], ["pinned"])
