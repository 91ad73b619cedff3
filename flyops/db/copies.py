"""Copies of the backup repository off the platform (`backup.copies`), with `restic copy`.

After each backup, `restic -r COPY copy --from-repo PRIMARY` brings the environment's dump and
manifest snapshots to every copy (restic cmd/restic/cmd_copy.go `runCopy`: the source is opened
with a read lock, the destination with an append lock; a snapshot already copied, found by its
`Original` id, is skipped: `collectAllSnapshots`). It copies every such snapshot, not only the
new one, so a copy that failed once (a disk not mounted, a network down) is caught up by the
next backup. The backup itself stays complete and listed in the primary whatever a copy does;
a copy that fails is reported with exit 9 (`CopyFailed`).

Passwords never go in argv: the destination's is RESTIC_PASSWORD, the source's
RESTIC_FROM_PASSWORD (internal/global/secondary_repo.go `FillGlobalOpts`: `pwdEnv =
"RESTIC_FROM_PASSWORD"`; the same in restic 0.14's cmd/restic/secondary_repo.go), both in the
child's environment from stdin (`flyops.hosts.prepare`).

Which pairs one restic process can take: restic's S3 backend reads its keys from the
process-wide AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (internal/backend/s3/s3.go
`getCredentials`: `credentials.EnvAWS` for every S3 repository it opens), so a copy between two
S3 repositories needs the same keys for both (doc/045_working_with_repos.rst, the note under
"Copying snapshots between repositories"). A folder copy works with any primary, an S3 copy
with a folder primary or with an S3 primary whose keys it shares; other pairs are refused when
the settings are read (`check_pair`), before anything runs. The way from a Tigris bucket to an
S3 copy with keys of its own is a second hop: a folder copy first, then the S3 copy with
`from_copy` naming it (each hop one restic process with one set of S3 keys).

A copy is never pruned or forgotten by this repository (`db.prune` works on the primary only):
so a copy can be append-only, and has to be pruned there with credentials of its own (README
"Copies off the platform"). Append-only here means S3 keys whose policy has no s3:DeleteObject
(with versioning on the bucket, so an overwrite keeps the old version). Measured with restic
0.18 against moto's server with IAM enforcement on (tests/tasks/test_append_only.py): `init`,
`backup` and `copy` work (exit 0; restic warns that it cannot remove its lock file), `snapshots`
and `dump` work, `check` fails as locked (exit 11: the locks it could not remove) unless
`--no-lock`, and `forget` / `prune` fail, which is the point.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass

from flyops.db.catalog import find_backup
from flyops.db.config import DEFAULT_TOOLS, RepoConfig, Tools
from flyops.db.hosts import Host
from flyops.db.restic import TAG, Repo, explain_failure, restic_host
from flyops.errors import BadInput, ExitCode, OpsError
from flyops.secret import Secret

#: the parts a copy gets: the dump and its manifest (a verification record is about the
#: repository it was made in, and the lock snapshots are the primary's own)
PARTS = ("dump", "manifest")


class CopyFailed(OpsError):
    """The backup is complete in the primary repository, a copy of it is not (exit 9)."""

    code = ExitCode.COPY_FAILED


def check_pair(primary: RepoConfig, copy: RepoConfig) -> None:
    """BadInput when one restic process cannot open both (two S3 repositories, other keys)."""
    if primary.location.startswith("s3:") and copy.location.startswith("s3:") and (
            primary.aws_access_key_id != copy.aws_access_key_id
            or primary.aws_secret_access_key != copy.aws_secret_access_key):
        raise BadInput(
            f"backup.copies: {copy.location} is an S3 repository with other keys than its source {primary.location}; "
            "restic's S3 backend takes one set of AWS_* keys per process, for both repositories of a `restic copy`",
            fix="copy to a folder first (a disk or NAS the backup host mounts), then from that folder to the "
                "S3 copy (from_copy = <the folder copy's index>); or give the copy the same keys")
    if copy.location == primary.location:
        raise BadInput(f"backup.copies: {copy.location} is the primary repository itself")


def check_tigris_copies(stack) -> None:
    """Before a Tigris bucket exists (its keys unknown yet): an S3 copy can only share the
    bucket's keys by naming them (keys_prefix = "TIGRIS_"), see `check_pair`."""
    for i, c in enumerate(stack.backup.copies):
        if c.repository.startswith("s3:") and c.keys_prefix != "TIGRIS_" and c.from_copy is None:
            raise BadInput(
                f"backup.copies[{i}]: {c.repository} is an S3 repository with other keys than the Tigris bucket; "
                "restic's S3 backend takes one set of AWS_* keys per process, for both repositories of a `restic copy`",
                fix="copy to a folder first (a disk or NAS the backup host mounts), then from that folder to the "
                    "S3 copy: from_copy = <the folder copy's index>")


def copy_secrets(primary: RepoConfig, copy: RepoConfig) -> dict[str, Secret]:
    """The child's environment: the destination's password and keys as restic's usual names,
    the source's password as RESTIC_FROM_PASSWORD."""
    out = dict(copy.secrets())
    out["RESTIC_FROM_PASSWORD"] = primary.password
    if "AWS_ACCESS_KEY_ID" not in out and primary.aws_access_key_id and primary.aws_secret_access_key:
        out["AWS_ACCESS_KEY_ID"] = primary.aws_access_key_id
        out["AWS_SECRET_ACCESS_KEY"] = primary.aws_secret_access_key
    return out


def copy_argv(primary: Repo, copy: Repo, env: str) -> list[str]:
    """`restic -r COPY copy --from-repo PRIMARY --host flyops-<env> --tag flyops,part=dump ...`
    (several --tag are OR'ed, the parts of one are AND'ed: restic's snapshot filter)."""
    tags: list[str] = []
    for part in PARTS:
        tags += ["--tag", f"{TAG},part={part}"]
    region = [] if copy.config.region or not primary.config.region else ["-o", f"s3.region={primary.config.region}"]
    return copy.argv(*region, "copy", "--from-repo", primary.location, "--host", restic_host(env), *tags)


def init_argv(primary: Repo, copy: Repo) -> list[str]:
    """`restic init --from-repo PRIMARY --copy-chunker-params`: the copy splits files as the
    primary does, so copied dumps deduplicate against each other there too (doc/045, "Ensuring
    deduplication for copied snapshots")."""
    region = [] if copy.config.region or not primary.config.region else ["-o", f"s3.region={primary.config.region}"]
    return copy.argv(*region, "init", "--from-repo", primary.location, "--copy-chunker-params")


@dataclass
class CopyOutcome:
    location: str
    ok: bool
    detail: str

    def to_dict(self) -> dict:
        return {"location": self.location, "ok": self.ok, "detail": self.detail}


def _source(primary: RepoConfig, copies: Sequence[RepoConfig], sources: Sequence[int | None] | None,
            i: int) -> RepoConfig:
    """What copy `i` is copied from: the primary, or an earlier copy (backup.copies[i].from_copy)."""
    j = sources[i] if sources else None
    return primary if j is None else copies[j]


def init_copies(primary: RepoConfig, copies: Sequence[RepoConfig], host: Host, tools: Tools = DEFAULT_TOOLS,
                sources: Sequence[int | None] | None = None) -> list[str]:
    """Create the copies that do not exist yet, in order (a copy's source first); returns their
    locations."""
    made = []
    for i, cfg in enumerate(copies):
        source = _source(primary, copies, sources, i)
        check_pair(source, cfg)
        src, dst = Repo(source, host, tools), Repo(cfg, host, tools)
        if dst.exists():
            continue
        r = host.run_script(shlex.join(init_argv(src, dst)) + "\n", copy_secrets(source, cfg))
        if not r.ok:
            raise explain_failure(r, "init (copy)", cfg.location)
        made.append(cfg.location)
    return made


def copy_backup(primary: RepoConfig, copies: Sequence[RepoConfig], env: str, backup_id: str, host: Host,
                tools: Tools = DEFAULT_TOOLS, sources: Sequence[int | None] | None = None) -> list[CopyOutcome]:
    """`restic copy` to every copy in order (from the primary, or from the earlier copy its
    `from_copy` names), then re-read each copy: the backup's dump and manifest are there. One
    outcome per copy; a failing copy does not stop the others (a copy whose source failed
    still catches up on what its source has)."""
    outcomes = []
    for i, cfg in enumerate(copies):
        source = _source(primary, copies, sources, i)
        src, dst = Repo(source, host, tools), Repo(cfg, host, tools)
        try:
            check_pair(source, cfg)
            dst.require()
            r = host.run_script(shlex.join(copy_argv(src, dst, env)) + "\n", copy_secrets(source, cfg))
            if not r.ok:
                raise explain_failure(r, "copy", cfg.location)
            find_backup(dst, env, backup_id)  # BadInput when the copy still lacks it
            outcomes.append(CopyOutcome(cfg.location, True, f"backup {backup_id} copied"))
        except OpsError as e:
            outcomes.append(CopyOutcome(cfg.location, False, " ".join(e.message.split())[:400]))
    return outcomes


def raise_if_failed(outcomes: Sequence[CopyOutcome], backup_id: str, env: str) -> None:
    bad = [o for o in outcomes if not o.ok]
    if bad:
        raise CopyFailed(
            f"backup {backup_id} is complete in the primary repository, but not in {len(bad)} copy(ies): "
            + "; ".join(f"{o.location}: {o.detail}" for o in bad),
            fix=f"fix the copy (mounted? reachable? `inv db.init --env {env}` creates a missing one); "
                "the next backup copies every backup the copy lacks")


