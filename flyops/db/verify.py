"""Verification building blocks (the drill composes them): integrity, decode, compare.

Each returns a dict with `ok` (bool), `level` and `problems` (readable lines), ready for
`record_verification`."""

from __future__ import annotations

import shlex

from flyops.db import pgconn
from flyops.db.backup import MANIFEST_FILE, find_backup, parse_kv
from flyops.db.manifest import compare_facts, database_facts
from flyops.db.restic import Repo, explain_failure
from flyops.secret import Secret


def resolve(repo: Repo, backup: dict | str, env: str | None) -> tuple[dict, dict]:
    """(dump snapshot, manifest) for a manifest dict or an id/`latest` (then `env` is needed)."""
    if isinstance(backup, dict):
        env, ref = backup["environment"], backup["id"]
    else:
        ref = backup
        if env is None:
            raise ValueError("env is required when backup is given by id")
    dump_snap, man_snap = find_backup(repo, env, ref)
    return dump_snap, repo.read_json(man_snap["id"], MANIFEST_FILE)


def dump_path(manifest: dict) -> str:
    return "/" + manifest["file"]


def integrity_script(repo: Repo, snapshot_id: str, path: str) -> str:
    return (f"{shlex.join(repo.argv('dump', snapshot_id, path))} | sha256sum > \"${{TMPDIR:-/tmp}}/.flyops-sha.$$\"\n"
            "st=(\"${PIPESTATUS[@]}\")\n"
            "echo \"rc_fetch=${st[0]}\"\n"
            "echo \"sha256=$(cut -d' ' -f1 < \"${TMPDIR:-/tmp}/.flyops-sha.$$\")\"\n"
            "rm -f \"${TMPDIR:-/tmp}/.flyops-sha.$$\"\n")


def check_integrity(repo: Repo, backup: dict | str, *, env: str | None = None,
                    read_data_subset: str | None = None) -> dict:
    """`restic check` (optionally reading a subset of pack data) and the SHA-256 of
    `restic dump` against the manifest."""
    dump_snap, manifest = resolve(repo, backup, env)
    problems: list[str] = []
    args = ["check"] + ([f"--read-data-subset={read_data_subset}"] if read_data_subset else [])
    r = repo.run(*args, check=False)
    if not r.ok:
        problems.append(explain_failure(r, "check", repo.location).message)
    r = repo.host.run_script(integrity_script(repo, dump_snap["id"], dump_path(manifest)), repo.config.secrets())
    out = parse_kv(r.stdout)
    if out.get("rc_fetch") != "0":
        problems.append(f"restic dump failed (exit {out.get('rc_fetch')}): {r.stderr.strip()[-500:]}")
    elif out.get("sha256") != manifest["sha256"]:
        problems.append(f"SHA-256 of the stored dump {out.get('sha256')} differs from the manifest {manifest['sha256']}")
    return {"ok": not problems, "level": "integrity", "backup_id": manifest["id"], "problems": problems}


def decode(repo: Repo, backup: dict | str, *, env: str | None = None) -> dict:
    """Stream the dump through `pg_restore -f /dev/null`: catches truncation `--list` misses."""
    dump_snap, manifest = resolve(repo, backup, env)
    script = (f"{shlex.join(repo.argv('dump', dump_snap['id'], dump_path(manifest)))} 2>\"${{TMPDIR:-/tmp}}/.flyops-err.$$\" "
              f"| {shlex.join([repo.tools.pg_restore, '--file=/dev/null'])}\n"
              "st=(\"${PIPESTATUS[@]}\")\n"
              "echo \"rc_fetch=${st[0]}\"; echo \"rc_decode=${st[1]}\"\n"
              "cat \"${TMPDIR:-/tmp}/.flyops-err.$$\" >&2; rm -f \"${TMPDIR:-/tmp}/.flyops-err.$$\"\n")
    r = repo.host.run_script(script, repo.config.secrets())
    out = parse_kv(r.stdout)
    problems = []
    if out.get("rc_fetch") != "0":
        problems.append(f"restic dump failed (exit {out.get('rc_fetch')})")
    if out.get("rc_decode") != "0":
        problems.append(f"pg_restore could not decode the dump (exit {out.get('rc_decode')}): "
                        f"{r.stderr.strip()[-500:]}")
    return {"ok": not problems, "level": "decode", "backup_id": manifest["id"], "problems": problems}


def compare_with_manifest(db_url: Secret, manifest: dict) -> dict:
    """Exact row counts per table, schema_migrations head, extensions and large-object count of
    a restored database against the manifest."""
    with pgconn.connect(db_url) as conn:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        actual = database_facts(conn)
        conn.execute("COMMIT")
    problems = compare_facts(manifest, actual)
    return {"ok": not problems, "level": "restore", "backup_id": manifest.get("id"), "problems": problems,
            "tables": len(actual["tables"]), "rows": sum(actual["tables"].values())}
