"""A Tigris bucket as the backup repository (`backup.repository = "tigris"`).

`fly storage create` (flyctl internal/command/storage/storage.go -> extensions/tigris/create.go
`runCreate` -> extensions/core/core.go `ProvisionExtension`) provisions a bucket through Fly's
GraphQL API. With no app in context it only *prints* the bucket's credentials, once, as
`KEY: value` lines sorted by key after "Set the following secrets on your target app."
(core.go `setSecretsFromExtension`); nothing can show them again. So:

* the two keys are parsed from flyctl's stdout in memory and written straight into
  env/<env>.env (`flyops.envfile.store_values`: one atomic write, the file's mode and other
  lines kept) as TIGRIS_AWS_ACCESS_KEY_ID / TIGRIS_AWS_SECRET_ACCESS_KEY, so an `AWS_*` line
  the file already has (another repository's keys) is never overwritten; they are masked in
  the runner and in every log record from then on, and never printed. The other lines
  (endpoint, region, bucket name) are not secret and are not written: the endpoint is
  `backup.endpoint`, checked against the one flyctl printed;
* the call runs with no app in context: an app (`-a`, `$FLY_APP`, or a fly.toml in the
  working directory: command.go `LoadAppNameIfPresent` -> `RequireAppName`) would make flyctl
  set the keys as that app's secrets, print them, and redeploy the app (create.go
  `DeploySecrets`). `$FLY_APP` is refused and the working directory is env/ (no fly.toml);
* idempotence: `fly storage list --org ORG` first (extensions/tigris/list.go `runList`: a
  table NAME / ORG, there is no --json); an existing bucket is used, never re-created.
  flyctl cannot show its keys again, so a bucket that exists while the env file has none is
  an error with the way out (new keys from the Tigris dashboard), not a second bucket.

The repository is then restic's S3 backend at `backup.endpoint` (default Tigris's
https://fly.storage.tigris.dev, Fly's docs; the stand-in's is moto's) with region `auto`:
`s3:<endpoint>/<bucket>/<env>`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from flyops.errors import BadInput, OpsError, PreconditionFailed
from flyops.fly.flyctl.commands import Call
from flyops.secret import Secret
from flyops.stack.envfile import EnvFile, load_env, store_values

DEFAULT_ENDPOINT = "https://fly.storage.tigris.dev"
DEFAULT_REGION = "auto"
PREFIX = "TIGRIS_"
#: flyctl prints what the server returns; these are the names flyctl itself relies on
#: (flypg/tigris.go, deploy/statics/addon.go) plus AWS_REGION, which Fly's docs show
ACCESS_KEY, SECRET_KEY, ENDPOINT, BUCKET, REGION = (
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL_S3", "BUCKET_NAME", "AWS_REGION")
REQUIRED = (ACCESS_KEY, SECRET_KEY)
KEY_LINE = re.compile(r"^([A-Z][A-Z0-9_]*): (\S+)\s*$", re.M)


def env_key(name: str) -> str:
    """The env-file key under which flyctl's `name` is kept."""
    return PREFIX + name


# --- flyctl calls ------------------------------------------------------------------------


def storage_list(org: str, cwd: Path | None = None) -> Call:
    """list.go: `--org` lists that organisation's buckets (no --json: a table NAME / ORG)."""
    return Call(("storage", "list", "--org", org), mutating=False, cwd=cwd)


def storage_create(name: str, org: str, cwd: Path | None = None) -> Call:
    """create.go: `--name` (else the server generates one), `--org` (no app: the keys are only
    printed), `--yes` (also accepts the provider's terms of service non-interactively:
    core.go `AgreeToProviderTos`). Private by default (`--public` not given)."""
    return Call(("storage", "create", "--name", name, "--org", org, "--yes"), mutating=True, cwd=cwd)


def storage_destroy(name: str, cwd: Path | None = None) -> Call:
    """destroy.go: the bucket by name, `--yes` (required when not interactive)."""
    return Call(("storage", "destroy", name, "--yes"), mutating=True, cwd=cwd)


# --- parsing -----------------------------------------------------------------------------


def bucket_names(table: str) -> list[str]:
    """Names in `fly storage list`'s table (render.Table: header NAME ORG, borderless; the
    only table this repository reads, since the command has no --json): the first cell of each
    row, cells split on tablewriter's column separator or whitespace."""
    names = []
    for line in table.splitlines():
        cells = [c for c in re.split(r"[│|\s]+", line.strip()) if c]
        if cells and cells[0] != "NAME":
            names.append(cells[0])
    return names


def parse_credentials(stdout: str) -> tuple[dict[str, Secret], dict[str, str]]:
    """The `KEY: value` lines `storage create` prints (core.go setSecretsFromExtension): the two
    keys as Secrets, the rest (endpoint, region, bucket) as text; OpsError naming the missing
    keys (never the output) when the keys are not there."""
    lines = {m.group(1): m.group(2) for m in KEY_LINE.finditer(stdout)}
    found = {k: Secret(lines[k]) for k in REQUIRED if k in lines}
    missing = [k for k in REQUIRED if k not in found]
    if missing:
        raise OpsError(f"`fly storage create` printed no {', '.join(missing)}",
                       fix="create an access key for the bucket in the Tigris dashboard (`fly storage dashboard "
                           "NAME`) and put it in env/<env>.env as TIGRIS_AWS_ACCESS_KEY_ID / TIGRIS_AWS_SECRET_ACCESS_KEY")
    return found, {k: v for k, v in lines.items() if k not in REQUIRED}


# --- the repository ----------------------------------------------------------------------


@dataclass(frozen=True)
class TigrisRepo:
    """Where restic finds the bucket, from the stack and the env file."""

    location: str
    access_key: Secret
    secret_key: Secret
    region: str


def has_keys(envfile: EnvFile) -> bool:
    return all((v := envfile.get(env_key(k))) is not None and v.reveal() for k in REQUIRED)


def repository(bucket: str, endpoint: str, env: str, envfile: EnvFile) -> TigrisRepo:
    """The restic repository in the bucket: `s3:<endpoint>/<bucket>/<env>`."""
    if not has_keys(envfile):
        raise PreconditionFailed(
            f"backup.repository = \"tigris\": {envfile.path} has no {env_key(ACCESS_KEY)} / {env_key(SECRET_KEY)}",
            fix=f"create the bucket {bucket} with `inv db.init --env {env}` (it saves the keys flyctl prints there)")
    return TigrisRepo(f"s3:{endpoint.rstrip('/')}/{bucket}/{env}", envfile.values[env_key(ACCESS_KEY)],
                      envfile.values[env_key(SECRET_KEY)], DEFAULT_REGION)


@dataclass(frozen=True)
class BucketOutcome:
    bucket: str
    created: bool
    envfile: EnvFile  # re-read after the keys were written


def ensure_bucket(runner, envfile: EnvFile, *, bucket: str, org: str, env: str, endpoint: str,
                  say: Callable[[str], None] = lambda line: None) -> BucketOutcome:
    """The bucket exists and its keys are in the env file: list, create when absent, save the
    keys. Under --dry the create is printed, not run. Convergent: a re-run finds the bucket."""
    if os.environ.get("FLY_APP") or (runner.env or {}).get("FLY_APP"):
        raise BadInput("FLY_APP is set: `fly storage create` would attach the bucket to that app, set the keys "
                       "as its secrets and redeploy it", fix="unset FLY_APP for this command")
    cwd = envfile.path.parent  # env/: never a fly.toml (an app in context), see the module docstring
    exists = bucket in bucket_names(runner.run(storage_list(org, cwd)).stdout)
    keys = has_keys(envfile)
    if exists and keys:
        return BucketOutcome(bucket, False, envfile)
    if exists:
        raise PreconditionFailed(
            f"the Tigris bucket {bucket} exists, but {envfile.path} has no {env_key(ACCESS_KEY)} / "
            f"{env_key(SECRET_KEY)}: flyctl prints a bucket's keys only when it creates it",
            fix=f"create an access key for {bucket} in the Tigris dashboard (`fly storage dashboard {bucket}`) and "
                f"set {env_key(ACCESS_KEY)} and {env_key(SECRET_KEY)} in {envfile.path}")
    if keys:
        raise PreconditionFailed(
            f"{envfile.path} has Tigris keys, but organisation {org} has no bucket {bucket} "
            "(destroyed, renamed in backup.bucket, or in another organisation); nothing was changed",
            fix=f"check backup.bucket and project.org; to start a new bucket, remove the {PREFIX}* lines "
                f"from {envfile.path} and run `inv db.init --env {env}` again")
    say(f"creating Tigris bucket {bucket} in {org} (its keys go to {envfile.path}, never to the screen)")
    result = runner.run(storage_create(bucket, org, cwd))
    if result.dry:
        return BucketOutcome(bucket, True, envfile)
    found, facts = parse_credentials(result.stdout)
    runner.add_masks(list(found.values()))
    store_values(envfile.path, {env_key(k): v for k, v in found.items()})  # first: flyctl never shows them again
    say(f"saved the bucket's keys as {', '.join(env_key(k) for k in REQUIRED)} in {envfile.path}")
    if facts.get(BUCKET, bucket) != bucket:
        raise OpsError(f"`fly storage create --name {bucket}` reported bucket {facts[BUCKET]!r}; its keys are saved",
                       fix="check `fly storage list` and backup.bucket")
    printed = facts.get(ENDPOINT, "").rstrip("/")
    if printed and printed != endpoint.rstrip("/"):
        raise BadInput(f"the bucket's endpoint is {printed}, but backup.endpoint is {endpoint}; its keys are saved",
                       fix=f'set backup.endpoint = "{printed}" in fly/{env}.toml')
    return BucketOutcome(bucket, True, load_env(envfile.path.parent.parent, env, must_exist=True))
