"""backup.repository = "tigris" and backup.copies, end to end: real `inv` processes, real
PostgreSQL and restic, the flyctl stand-in's `fly storage create` making a real bucket on
moto's S3 server (which stands in for Tigris), and a folder copy off the platform."""

from __future__ import annotations

import json
import re
import secrets
import shutil
import stat

import boto3
import pytest

from flyops.db.sample import seed_sample
from tests.helpers import edit, write_env

PW = "restic-pw-tigris-tests-3k"


@pytest.fixture
def tigris(ops, pg, make_db, s3):
    """env `local` on a Tigris bucket at moto, with one folder copy; env file with other lines."""
    db = make_db("tg")
    url = pg.url(db).reveal()
    seed_sample(url)
    bucket = f"tg-{secrets.token_hex(4)}"
    copy = ops.root / "offsite" / "local"
    edit(ops.root / "fly" / "local.toml", 'repository = "var/backups/local"',
         f'repository = "tigris"\nbucket = "{bucket}"\nendpoint = "{s3.endpoint}"\n'
         f'copies = [{{ repository = "offsite/{{env}}" }}]')
    envfile = write_env(ops.root, "local", {"DATABASE_URL": url, "RESTIC_PASSWORD": PW, "AWS_ACCESS_KEY_ID": "keep-me"})
    with envfile.open("a") as f:
        f.write("# a comment the bucket's keys must not disturb\n")
    ops.bucket, ops.copy, ops.s3, ops.envfile = bucket, copy, s3, envfile
    runtime = ops.root / "run"  # the per-environment backup flock: this test's own, not the machine's
    runtime.mkdir(mode=0o700)
    ops.extra = {"FAKEFLY_TIGRIS_ENDPOINT": s3.endpoint, "XDG_RUNTIME_DIR": str(runtime)}
    return ops


def _inv(ops, *args):
    return ops.inv(*args, **ops.extra)


def _keys(ops) -> dict[str, str]:
    text = ops.envfile.read_text()
    return dict(re.findall(r"^(TIGRIS_AWS_(?:ACCESS_KEY_ID|SECRET_ACCESS_KEY))=(.+)$", text, re.M))


def _creates(ops) -> list[list[str]]:
    return [e["argv"] for e in ops.argv_log() if e["argv"][:2] == ["storage", "create"]]


def test_db_init_creates_the_bucket_once_and_keeps_its_keys_off_the_screen(tigris):
    mode_before = stat.S_IMODE(tigris.envfile.stat().st_mode)
    r = _inv(tigris, "db.init", "--env", "local", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["bucket"] == {"name": tigris.bucket, "created": True} and out["created"] is True
    assert out["repository"] == f"s3:{tigris.s3.endpoint}/{tigris.bucket}/local"
    assert out["copies"] == [{"location": str(tigris.copy), "created": True}]
    keys = _keys(tigris)
    assert set(keys) == {"TIGRIS_AWS_ACCESS_KEY_ID", "TIGRIS_AWS_SECRET_ACCESS_KEY"}
    for value in keys.values():
        assert value not in r.stdout + r.stderr
    text = tigris.envfile.read_text()
    assert "AWS_ACCESS_KEY_ID=keep-me\n" in text and "# a comment the bucket's keys must not disturb\n" in text
    assert stat.S_IMODE(tigris.envfile.stat().st_mode) == mode_before == 0o600
    # the bucket is real, and the restic repository is in it
    client = boto3.client("s3", endpoint_url=tigris.s3.endpoint, region_name="us-east-1",
                          aws_access_key_id=keys["TIGRIS_AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=keys["TIGRIS_AWS_SECRET_ACCESS_KEY"])
    objects = [o["Key"] for o in client.list_objects_v2(Bucket=tigris.bucket).get("Contents", [])]
    assert "local/config" in objects
    assert (tigris.copy / "config").is_file()

    again = _inv(tigris, "db.init", "--env", "local")
    assert again.returncode == 0, again.stderr
    assert "already there" in again.stdout
    assert len(_creates(tigris)) == 1, "an existing bucket was created again"
    assert _keys(tigris) == keys


def test_a_bucket_whose_keys_were_lost_is_not_made_twice(tigris):
    assert _inv(tigris, "db.init", "--env", "local").returncode == 0
    text = tigris.envfile.read_text()
    tigris.envfile.write_text(re.sub(r"^TIGRIS_AWS_.*\n", "", text, flags=re.M))
    r = _inv(tigris, "db.init", "--env", "local")
    assert r.returncode == 5, r.stderr
    assert tigris.bucket in r.stderr and "only when it creates it" in r.stderr and "dashboard" in r.stderr
    assert len(_creates(tigris)) == 1


def test_dry_db_init_prints_the_create_and_makes_nothing(tigris):
    r = _inv(tigris, "--dry", "db.init", "--env", "local")
    assert r.returncode == 0, r.stderr
    assert f"[dry] fly storage create --name {tigris.bucket} --org personal --yes" in r.stdout + r.stderr
    assert _creates(tigris) == [] and not _keys(tigris)


def test_backup_lands_in_tigris_and_in_the_copy_restore_and_verify_use_them(tigris):
    assert _inv(tigris, "db.init", "--env", "local").returncode == 0
    b = _inv(tigris, "db.backup", "--env", "local", "--json")
    assert b.returncode == 0, b.stderr
    backup = json.loads(b.stdout)
    assert backup["copies"] == [{"location": str(tigris.copy), "ok": True, "detail": f"backup {backup['id']} copied"}]
    listed = json.loads(_inv(tigris, "db.list", "--env", "local", "--json").stdout)
    assert listed["repository"].startswith(f"s3:{tigris.s3.endpoint}/{tigris.bucket}/")
    assert [x["id"] for x in listed["backups"]] == [backup["id"]]

    v = _inv(tigris, "db.verify", "--env", "local", "--level", "integrity", "--json")
    assert v.returncode == 0, v.stdout + v.stderr
    checks = {c["name"]: c for c in json.loads(v.stdout)["checks"]}
    assert checks[f"copy {tigris.copy}"]["ok"] is True

    r = _inv(tigris, "db.restore", "--env", "local", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["backup_id"] == backup["id"]


def test_a_corrupted_pack_in_the_copy_fails_verify_naming_the_copy(tigris):
    assert _inv(tigris, "db.init", "--env", "local").returncode == 0
    assert _inv(tigris, "db.backup", "--env", "local").returncode == 0
    packs = sorted((tigris.copy / "data").rglob("*"), key=lambda p: p.stat().st_size if p.is_file() else 0)
    pack = packs[-1]  # the largest pack: the dump's data
    assert pack.is_file()
    data = bytearray(pack.read_bytes())
    data[len(data) // 2] ^= 0xFF
    pack.chmod(0o644)
    pack.write_bytes(bytes(data))
    v = _inv(tigris, "db.verify", "--env", "local", "--level", "integrity", "--json")
    assert v.returncode == 3, v.stdout + v.stderr
    checks = {c["name"]: c for c in json.loads(v.stdout)["checks"]}
    assert checks["integrity"]["ok"] is True  # the primary is intact
    assert checks[f"copy {tigris.copy}"]["ok"] is False
    assert f"copy {tigris.copy}" in v.stderr


def test_a_failed_copy_leaves_the_backup_done_and_the_next_run_catches_up(tigris):
    assert _inv(tigris, "db.init", "--env", "local").returncode == 0
    shutil.rmtree(tigris.copy)  # an unmounted disk
    first = _inv(tigris, "db.backup", "--env", "local")
    assert first.returncode == 9, first.stdout + first.stderr
    assert "complete in the primary repository" in first.stderr and str(tigris.copy) in first.stderr
    assert not tigris.copy.exists(), "a backup created the missing copy by itself"
    listed = json.loads(_inv(tigris, "db.list", "--env", "local", "--json").stdout)["backups"]
    assert len(listed) == 1

    assert _inv(tigris, "db.init", "--env", "local").returncode == 0  # the copy made again, on purpose
    second = _inv(tigris, "db.backup", "--env", "local", "--json")
    assert second.returncode == 0, second.stderr
    ids = {x["id"] for x in json.loads(_inv(tigris, "db.list", "--env", "local", "--json").stdout)["backups"]}
    assert len(ids) == 2
    for bid in ids:  # both, the one the failed run could not copy included
        v = _inv(tigris, "db.verify", "--env", "local", "--level", "integrity", "--backup", bid, "--json")
        assert v.returncode == 0, v.stdout
        assert any(c["name"] == f"copy {tigris.copy}" and c["ok"] for c in json.loads(v.stdout)["checks"])


def test_an_s3_copy_with_other_keys_than_the_tigris_primary_is_refused(tigris):
    edit(tigris.root / "fly" / "local.toml", 'copies = [{ repository = "offsite/{env}" }]',
         f'copies = [{{ repository = "s3:{tigris.s3.endpoint}/{tigris.s3.bucket}/copy", keys_prefix = "OFF_" }}]')
    with tigris.envfile.open("a") as f:
        f.write("OFF_AWS_ACCESS_KEY_ID=a\nOFF_AWS_SECRET_ACCESS_KEY=bbbbbbbb\n")
    r = _inv(tigris, "db.init", "--env", "local")
    assert r.returncode == 2 and "one set of AWS_* keys" in r.stderr, r.stderr
    assert _creates(tigris) == [] and not _keys(tigris), "bad input, yet the bucket was made"


def test_a_second_hop_takes_tigris_backups_to_an_append_only_s3_copy_with_its_own_keys(tigris, s3_append_only):
    """Tigris -> folder -> S3 (from_copy = 0): each hop one restic process with one set of S3
    keys. The last hop is the IAM-enforcing moto, so the copy's own keys must really be used."""
    ao = s3_append_only
    location = f"s3:{ao.endpoint}/{ao.bucket}/hop-{secrets.token_hex(4)}"
    edit(tigris.root / "fly" / "local.toml", 'copies = [{ repository = "offsite/{env}" }]',
         'copies = [{ repository = "offsite/{env}" }, '
         f'{{ repository = "{location}", keys_prefix = "OFF_", append_only = true, from_copy = 0 }}]')
    with tigris.envfile.open("a") as f:
        f.write(f"OFF_AWS_ACCESS_KEY_ID={ao.writer[0]}\nOFF_AWS_SECRET_ACCESS_KEY={ao.writer[1].reveal()}\n")
    r = _inv(tigris, "db.init", "--env", "local", "--json")
    assert r.returncode == 0, r.stderr
    assert [c["created"] for c in json.loads(r.stdout)["copies"]] == [True, True]
    b = _inv(tigris, "db.backup", "--env", "local", "--json")
    assert b.returncode == 0, b.stdout + b.stderr
    assert [c["ok"] for c in json.loads(b.stdout)["copies"]] == [True, True]
    v = _inv(tigris, "db.verify", "--env", "local", "--level", "integrity", "--json")
    assert v.returncode == 0, v.stdout + v.stderr
    names = {c["name"] for c in json.loads(v.stdout)["checks"] if c["ok"]}
    assert {f"copy {tigris.copy}", f"copy {location}"} <= names


def test_from_copy_must_name_an_earlier_copy(tigris):
    edit(tigris.root / "fly" / "local.toml", 'copies = [{ repository = "offsite/{env}" }]',
         'copies = [{ repository = "offsite/{env}", from_copy = 0 }]')
    r = _inv(tigris, "db.init", "--env", "local")
    assert r.returncode == 2 and "fly/local.toml" in r.stderr and "from_copy" in r.stderr, r.stderr
