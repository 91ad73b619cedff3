"""An append-only copy, for real: moto's S3 server with IAM enforced (tests/services.py
`s3_append_only`), a copy whose keys may put and get but not delete, real restic and `inv`.
What it shows: backups reach the copy and verify there; the backup host's own keys cannot
forget, prune or delete anything in it (the ransomware case); the owner's keys can prune."""

from __future__ import annotations

import functools
import json
import subprocess

import boto3
import pytest
from botocore.exceptions import ClientError

from flyops.db.sample import seed_sample
from tests.helpers import edit, write_env

PW = "restic-pw-append-only-5t"


@pytest.fixture
def offsite(ops, pg, make_db, s3_append_only):
    ao = s3_append_only
    db = make_db("ao")
    url = pg.url(db).reveal()
    seed_sample(url)
    prefix = f"copy-{make_db('p')}"
    location = f"s3:{ao.endpoint}/{ao.bucket}/{prefix}"
    edit(ops.root / "fly" / "local.toml", 'repository = "var/backups/local"',
         f'repository = "var/backups/local"\n'
         f'copies = [{{ repository = "{location}", keys_prefix = "OFF_", append_only = true }}]')
    write_env(ops.root, "local", {"DATABASE_URL": url, "RESTIC_PASSWORD": PW,
                                  "OFF_AWS_ACCESS_KEY_ID": ao.writer[0],
                                  "OFF_AWS_SECRET_ACCESS_KEY": ao.writer[1].reveal()})
    ops.ao, ops.location, ops.prefix = ao, location, prefix
    runtime = ops.root / "run"  # the per-environment backup flock: this test's own, not the machine's
    runtime.mkdir(mode=0o700)
    ops.inv = functools.partial(ops.inv, XDG_RUNTIME_DIR=str(runtime))
    return ops


def _restic(ops, key: tuple, *args: str) -> subprocess.CompletedProcess:
    from tests.tasks.conftest import INV

    env = ops.env(AWS_ACCESS_KEY_ID=key[0], AWS_SECRET_ACCESS_KEY=key[1].reveal(), RESTIC_PASSWORD=PW)
    return subprocess.run([str(INV.with_name("restic")), "-r", ops.location, "--no-cache", *args],
                          capture_output=True, text=True, env=env, timeout=120)


def test_an_append_only_copy_takes_backups_and_refuses_to_lose_them(offsite):
    ops, ao = offsite, offsite.ao
    assert ops.inv("db.init", "--env", "local").returncode == 0
    b = ops.inv("db.backup", "--env", "local", "--json")
    assert b.returncode == 0, b.stdout + b.stderr
    backup = json.loads(b.stdout)
    assert backup["copies"][0]["ok"] is True, backup["copies"]
    v = ops.inv("db.verify", "--env", "local", "--level", "integrity", "--json")
    assert v.returncode == 0, v.stdout + v.stderr
    assert any(c["name"] == f"copy {ops.location}" and c["ok"] for c in json.loads(v.stdout)["checks"])

    # the backup host is taken over: with its keys nothing in the copy can be removed
    forget = _restic(ops, ao.writer, "forget", "--prune", "--keep-last", "0", "--tag", "flyops")
    assert forget.returncode != 0, forget.stdout
    s3w = boto3.client("s3", endpoint_url=ao.endpoint, region_name="us-east-1", aws_access_key_id=ao.writer[0],
                       aws_secret_access_key=ao.writer[1].reveal())
    keys = [o["Key"] for o in s3w.list_objects_v2(Bucket=ao.bucket, Prefix=ops.prefix + "/data/")["Contents"]]
    with pytest.raises(ClientError, match="AccessDenied"):
        s3w.delete_object(Bucket=ao.bucket, Key=keys[0])
    # an overwrite is allowed by s3:PutObject, but the bucket keeps the old version
    s3w.put_object(Bucket=ao.bucket, Key=keys[0], Body=b"ransom")
    s3o = boto3.client("s3", endpoint_url=ao.endpoint, region_name="us-east-1", aws_access_key_id=ao.owner[0],
                       aws_secret_access_key=ao.owner[1].reveal())
    versions = s3o.list_object_versions(Bucket=ao.bucket, Prefix=keys[0])["Versions"]
    assert len(versions) == 2
    bad = ops.inv("db.verify", "--env", "local", "--level", "integrity", "--json")
    assert bad.returncode == 3 and f"copy {ops.location}" in bad.stderr  # the damage is seen, not hidden
    old = next(v for v in versions if not v["IsLatest"])
    s3o.copy_object(Bucket=ao.bucket, Key=keys[0], CopySource={"Bucket": ao.bucket, "Key": keys[0],
                                                               "VersionId": old["VersionId"]})
    good = ops.inv("db.verify", "--env", "local", "--level", "integrity")
    assert good.returncode == 0, good.stdout + good.stderr  # the owner put the old version back
    snaps = json.loads(_restic(ops, ao.writer, "snapshots", "--json").stdout)
    assert any(f"id={backup['id']}" in s.get("tags", []) for s in snaps), "the backup left the copy"

    # pruning is the owner's job, with its own keys: the locks restic could not remove, then prune
    assert _restic(ops, ao.owner, "unlock").returncode == 0
    pruned = _restic(ops, ao.owner, "forget", "--prune", "--keep-last", "1")
    assert pruned.returncode == 0, pruned.stderr


def test_without_append_only_the_copy_check_trips_over_the_locks_restic_could_not_remove(offsite):
    ops = offsite
    edit(ops.root / "fly" / "local.toml", "append_only = true", "append_only = false")
    assert ops.inv("db.init", "--env", "local").returncode == 0
    assert ops.inv("db.backup", "--env", "local").returncode == 0
    v = ops.inv("db.verify", "--env", "local", "--level", "integrity", "--json")
    assert v.returncode == 3
    detail = next(c["detail"] for c in json.loads(v.stdout)["checks"] if c["name"] == f"copy {ops.location}")
    assert "locked" in detail
