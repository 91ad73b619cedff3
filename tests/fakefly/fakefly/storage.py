"""`fly storage create|list|destroy` (Tigris), modelled from flyctl v0.4.87:
internal/command/storage/storage.go (`New` returns tigris.New: alias `tigris`),
internal/command/extensions/tigris/{create,list,destroy}.go and extensions/core/core.go.

The bucket is a real bucket on an S3 server: `$FAKEFLY_TIGRIS_ENDPOINT` (the tests point it at
their moto server) stands in for Tigris. It is created and removed with plain unsigned HTTP
requests (moto's server accepts them; standard library only, like the rest of the stand-in).
The platform's side (which buckets exist, in which org, and their keys) is kept in
`state["tigris"]`; the keys are printed once, by `create`, as flyctl does.

What comes from Fly's API and not from flyctl's source is marked "server-side guess".
"""

from __future__ import annotations

import os
import secrets
import sys
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET

from . import state as S
from .cli import FlyError, record_event
from .commands import handler, load_config, nargs, out, resolve_org

ENDPOINT_VAR = "FAKEFLY_TIGRIS_ENDPOINT"
#: server-side guesses (the provider record comes from GraphQL `GetAddOnProvider`)
DISPLAY_NAME, RESOURCE_NAME = "Tigris Object Storage", "bucket"
INSTRUCTIONS = "https://fly.io/docs/reference/tigris/"
TOS = ("Tigris Object Storage is provided by Tigris Data, Inc. By using it you agree to the Tigris terms of service "
       "(https://www.tigrisdata.com/docs/legal/terms-of-service/).")


def _app_in_context(opts) -> str | None:
    """command.go LoadAppNameIfPresent -> RequireAppName: --app, then $FLY_APP, then a fly.toml
    in the working directory (or --config)."""
    name = opts.get("app") or os.environ.get("FLY_APP")
    if name:
        return name
    cfg, _ = load_config(opts) if "config" in opts else load_config({})
    return (cfg or {}).get("app") or None


def _endpoint() -> str:
    ep = os.environ.get(ENDPOINT_VAR, "").rstrip("/")
    if not ep:
        raise FlyError(f"fakefly: {ENDPOINT_VAR} is not set (the S3 server that stands in for Tigris)")
    return ep


#: moto's server checks no signature unless its IAM auth is on, but answers an anonymous
#: DELETE of an object with 403: a request has to name a key in a SigV4-shaped header
_AUTH = {"Authorization": "AWS4-HMAC-SHA256 Credential=fakefly/20260101/us-east-1/s3/aws4_request, "
                          "SignedHeaders=host, Signature=0"}


def _s3(method: str, path: str) -> tuple[int, bytes]:
    req = urllib.request.Request(_endpoint() + path, method=method, headers=_AUTH)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except OSError as e:
        raise FlyError(f"fakefly: the S3 server at {_endpoint()} is not reachable: {e}") from None


def _tigris(st: dict) -> dict:
    return st.setdefault("tigris", {})


@handler("storage create")
def storage_create(home, opts, args):
    """create.go runCreate + core.go ProvisionExtension / AgreeToProviderTos / setSecretsFromExtension."""
    nargs(args, 0)
    if _app_in_context(opts):
        # with an app, flyctl sets the keys as that app's secrets and redeploys it (DeploySecrets)
        raise FlyError("fakefly: `storage create` with an app in context (--app, FLY_APP, fly.toml) is not modelled")
    shadow = [opts.get(f"shadow-{k}") for k in ("access-key", "secret-key", "region", "name", "endpoint")]
    if any(shadow) and not all(shadow):  # create.go isShadowBucketSpecified
        raise FlyError("You must set all required shadow bucket values: shadow-access-key, shadow-secret-key, "
                       "shadow-region, shadow-name, shadow-endpoint")
    st = S.load(home)
    org = resolve_org(st, opts)  # orgs.OrgFromFlagOrSelect
    # AgreeToProviderTos: with --yes the terms are printed and taken as agreed, and never
    # recorded (it returns before CreateTosAgreement), so they are printed on every run
    if not st.get("tigris_tos_agreed"):
        out("\n" + TOS + "\n")
        if not opts.get("yes"):
            raise FlyError("To agree, the --yes flag must be specified when not running interactively")
        out("By specifying the --yes flag, you have agreed to the terms displayed above.")
    name = opts.get("name") or ""
    if not name:
        if not opts.get("yes"):  # prompt.String, refused without a terminal
            raise FlyError("prompt: non interactive")
        name = "bucket-" + secrets.token_hex(4)  # server-side guess: a generated name
    with S.mutate(home) as st2:
        buckets = _tigris(st2)
        if name in buckets:  # bucket names are global at Tigris: server-side guess of the text
            raise FlyError("Name has already been taken")
        status, body = _s3("PUT", f"/{name}")
        if status not in (200, 201):
            raise FlyError(f"fakefly: creating bucket {name} on the S3 server failed: HTTP {status} {body[:200]!r}")
        keys = {"AWS_ACCESS_KEY_ID": "tid_" + secrets.token_urlsafe(18).replace("-", "").replace("_", "")[:20],
                "AWS_SECRET_ACCESS_KEY": "tsec_" + secrets.token_urlsafe(36).replace("-", "").replace("_", "")[:40]}
        buckets[name] = {"org": org, "status": "ready", "created_at": S.rfc3339(), "keys": keys}
    record_event(home, {"event": "storage_create", "name": name, "org": org})
    out(f"Your {DISPLAY_NAME} {RESOURCE_NAME} ({name}) is ready. See details and next steps with: {INSTRUCTIONS}\n")
    # setSecretsFromExtension with no app: setSecrets = false, the keys are printed sorted
    environment = {**keys, "AWS_ENDPOINT_URL_S3": _endpoint(), "AWS_REGION": "auto", "BUCKET_NAME": name}
    out("Set the following secrets on your target app.")
    for key in sorted(environment):
        out(f"{key}: {environment[key]}")
    return 0


@handler("storage list")
def storage_list(home, opts, args):
    """list.go runList: with --org the org is looked up first (GetOrganizationBySlug), then its
    add-ons of type tigris; without, every tigris add-on the viewer sees. render.Table NAME, ORG
    (tab-separated here, like the stand-in's other tables)."""
    nargs(args, 0)
    st = S.load(home)
    slug = opts.get("org")
    if slug and slug not in st["orgs"]:
        raise FlyError(f'Could not find Organization "{slug}"')
    rows = [(n, b["org"]) for n, b in sorted(_tigris(st).items()) if not slug or b["org"] == slug]
    out("NAME\tORG")
    for name, org in rows:
        out(f"{name}\t{org}")
    out()
    return 0


@handler("storage destroy")
def storage_destroy(home, opts, args):
    """destroy.go runDestroy: core.go Discover (a name, or the app's add-on), the confirmation
    (`--yes` when not interactive), DeleteAddOn, then the line below."""
    nargs(args, 0, 1)
    st = S.load(home)
    if args:
        if args[0] not in _tigris(st):
            raise FlyError(f'Could not find AddOn "{args[0]}"')  # server-side guess of the text
        name = args[0]
    elif _app_in_context(opts):
        raise FlyError("fakefly: `storage destroy` of an app's bucket is not modelled")
    else:
        raise FlyError("Run this command in a Fly app directory or pass a name as the first argument.")
    if not opts.get("yes"):
        sys.stderr.write("Destroying a Tigris storage bucket is not reversible.\n")
        raise FlyError("yes flag must be specified when not running interactively")
    _empty_and_delete(name)
    with S.mutate(home) as st2:
        _tigris(st2).pop(name, None)
    record_event(home, {"event": "storage_destroy", "name": name})
    out(f"Your Tigris object storage bucket {name} was destroyed")
    return 0


def _empty_and_delete(name: str) -> None:
    """Tigris removes a bucket with what is in it (server-side guess); S3 refuses a non-empty
    bucket, so its objects go first."""
    while True:
        status, body = _s3("GET", f"/{name}?list-type=2&max-keys=1000")
        if status == 404:
            return
        keys = [el.text for el in ET.fromstring(body).iter() if el.tag.endswith("}Key") and el.text]
        if not keys:
            break
        for key in keys:
            status, body = _s3("DELETE", f"/{name}/{urllib.request.quote(key)}")
            if status not in (200, 204):
                raise FlyError(f"fakefly: deleting {key} from bucket {name} failed: HTTP {status} {body[:200]!r}")
    _s3("DELETE", f"/{name}")
