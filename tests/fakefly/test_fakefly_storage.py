"""`fly storage create|list|destroy` (fakefly/storage.py) against moto's S3 server, which
stands in for Tigris: the bucket is real, the keys are printed once, as flyctl's
extensions/core/core.go setSecretsFromExtension prints them without an app."""

from __future__ import annotations

import re
import secrets

import boto3
import pytest


@pytest.fixture
def tfly(fly, s3):
    fly.env["FAKEFLY_TIGRIS_ENDPOINT"] = s3.endpoint
    fly.s3 = boto3.client("s3", endpoint_url=s3.endpoint, region_name="us-east-1", aws_access_key_id="x",
                          aws_secret_access_key="y")
    return fly


def _buckets(tfly) -> set[str]:
    return {b["Name"] for b in tfly.s3.list_buckets()["Buckets"]}


def test_create_makes_a_real_bucket_and_prints_its_keys_once(tfly):
    name = f"ff-{secrets.token_hex(4)}"
    r = tfly.run("storage", "create", "--name", name, "--org", "personal", "--yes")
    assert r.rc == 0, r.err
    assert "By specifying the --yes flag, you have agreed to the terms displayed above." in r.out
    assert f"bucket ({name}) is ready" in r.out
    tail = r.out.split("Set the following secrets on your target app.\n", 1)[1]
    keys = dict(re.findall(r"^([A-Z0-9_]+): (\S+)$", tail, re.M))
    assert sorted(keys) == list(keys) == ["AWS_ACCESS_KEY_ID", "AWS_ENDPOINT_URL_S3", "AWS_REGION",
                                          "AWS_SECRET_ACCESS_KEY", "BUCKET_NAME"]
    assert keys["BUCKET_NAME"] == name and keys["AWS_ACCESS_KEY_ID"].startswith("tid_")
    assert name in _buckets(tfly)
    listed = tfly.run("storage", "list", "--org", "personal")
    assert listed.rc == 0 and f"{name}\tpersonal" in listed.out
    assert keys["AWS_SECRET_ACCESS_KEY"] not in listed.out
    again = tfly.run("storage", "create", "--name", name, "--org", "personal", "--yes")
    assert again.rc == 1 and "Name has already been taken" in again.err
    assert all(line["argv"][:2] == ["storage", "create"] or line["argv"][:2] == ["storage", "list"]
               for line in tfly.argv_log())
    assert keys["AWS_SECRET_ACCESS_KEY"] not in (tfly.home / "argv.log").read_text()


def test_create_needs_yes_for_the_terms_and_an_org_without_a_terminal(tfly):
    r = tfly.run("storage", "create", "--name", "ff-noyes", "--org", "personal")
    assert r.rc == 1 and "To agree, the --yes flag must be specified" in r.err
    r = tfly.run("storage", "create", "--name", "ff-shadow", "--yes", "--shadow-name", "x")
    assert r.rc == 1 and "You must set all required shadow bucket values" in r.err
    r = tfly.run("storage", "list", "--org", "nope")
    assert r.rc == 1 and 'Could not find Organization "nope"' in r.err


def test_destroy_needs_yes_and_removes_the_bucket_with_its_objects(tfly):
    name = f"ff-{secrets.token_hex(4)}"
    assert tfly.run("storage", "create", "--name", name, "--org", "personal", "--yes").rc == 0
    tfly.s3.put_object(Bucket=name, Key="a/b", Body=b"x")
    r = tfly.run("storage", "destroy", name)
    assert r.rc == 1 and "yes flag must be specified" in r.err and name in _buckets(tfly)
    r = tfly.run("storage", "destroy", name, "--yes")
    assert r.rc == 0 and f"Your Tigris object storage bucket {name} was destroyed" in r.out
    assert name not in _buckets(tfly)
    assert name not in tfly.run("storage", "list").out
    r = tfly.run("storage", "destroy")
    assert r.rc == 1 and "pass a name as the first argument" in r.err
