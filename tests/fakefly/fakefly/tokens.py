"""Token scopes: `fly tokens create deploy|org` and what Fly then refuses.

flyctl v0.4.87 internal/command/tokens/create.go: `tokens create deploy` asks the API for a
token of profile "deploy" with `app_id` = the app ("an API token limited to managing a single
app and its resources"); `tokens create org` for profile "deploy_organization" ("limited to
managing a single org and its resources"). Both expire after `--expiry` (default 20 years).
The checks are the server's (macaroon caveats), not flyctl's: flyctl prints the API's error
after `Error: ` (fly-go flaps/flaps.go handleAPIError) and exits 1. Every macaroon
verification error starts with "unauthorized" (superfly/macaroon errors.go ErrUnauthorized);
the full server wording is not in either source, so the stand-in says just `unauthorized`.

Modelled here:
* a deploy (app) token: commands on its own app work; creating an app (`apps create`,
  `postgres create`), listing the org's apps and touching any other app are refused;
* an org token: everything in its org; another org's apps and `--org` are refused;
* expired tokens are refused; a scoped token cannot mint tokens;
* a token this stand-in did not mint (e.g. "test-token") is a personal token: all allowed.
"""

from __future__ import annotations

import os
import re
import secrets as _secrets
import sys
import time

from . import state as S
from .cli import FlyError, current_token

ORG_LEVEL = {("apps", "create"), ("apps", "list"), ("postgres", "create"), ("postgres", "list"),
             ("tokens", "create", "org"), ("orgs", "list")}
MINTING = {("tokens", "create", "deploy"), ("tokens", "create", "org")}
UNAUTHORIZED = "unauthorized"


def _duration(text: str | None) -> float:
    if not text:
        return 20 * 365 * 24 * 3600.0
    total, pos = 0.0, 0
    for m in re.finditer(r"(\d+(?:\.\d+)?)(h|m|s)", text):
        total += float(m.group(1)) * {"h": 3600, "m": 60, "s": 1}[m.group(2)]
        pos = m.end()
    if pos != len(text) or total <= 0:
        raise FlyError(f'invalid argument "{text}" for "-x, --expiry" flag: time: invalid duration "{text}"', usage=True)
    return total


def make_token(home, scope: str, *, app: str | None = None, org: str = "personal", expires_in: float | None = None) -> str:
    """Mint a token (test API, and what `tokens create` does). Returns `FlyV1 fm2_...`."""
    tok = "fm2_fakefly" + _secrets.token_hex(24)
    with S.mutate(home) as st:
        st.setdefault("tokens", {})[tok] = {
            "scope": scope, "app": app, "org": org,
            "expires": time.time() + (expires_in if expires_in is not None else _duration(None)),
        }
    return "FlyV1 " + tok


def _targets(opts, args, path) -> list[str]:
    from .commands import app_name

    names: list[str] = []
    if path in ORG_LEVEL:
        return names
    try:
        names.append(app_name(opts))
    except FlyError:
        pass
    if path == ("postgres", "attach") and args:
        names.append(args[0])  # the cluster is read and changed too
    if path in (("apps", "destroy"),):
        names = list(args)
    return names


def authorize(home, path: tuple[str, ...], opts, args) -> None:
    tok = current_token(opts)
    st = S.load(home)
    rec = (st.get("tokens") or {}).get(tok)
    if rec is None:
        return  # a personal token
    if rec["expires"] < time.time():
        raise FlyError(UNAUTHORIZED)
    if path in MINTING:
        raise FlyError(UNAUTHORIZED)
    if path == ("tokens", "debug"):
        return
    if rec["scope"] == "app":
        if path in ORG_LEVEL:
            raise FlyError(UNAUTHORIZED)
        if any(t != rec["app"] for t in _targets(opts, args, path)):
            raise FlyError(UNAUTHORIZED)
        return
    # an org token
    org = opts.get("org") or os.environ.get("FLY_ORG")
    if org and org != rec["org"]:
        raise FlyError(UNAUTHORIZED)
    for t in _targets(opts, args, path):
        app = st["apps"].get(t)
        if app is not None and app["org"] != rec["org"]:
            raise FlyError(UNAUTHORIZED)


def cmd_tokens_create(home, opts, args, scope: str) -> int:
    from .commands import app_name, get_app, out, resolve_org

    expiry = _duration(opts.get("expiry"))
    st = S.load(home)
    if scope == "app":
        name = app_name(opts)
        app = get_app(st, name, f"failed retrieving app {name}: Could not find App \"{name}\"")
        tok = make_token(home, "app", app=name, org=app["org"], expires_in=expiry)
    else:
        org = resolve_org(st, opts)
        tok = make_token(home, "org", org=org, expires_in=expiry)
    if opts.get("json"):
        import json

        sys.stdout.write(json.dumps({"token": tok}, indent=2) + "\n")
    else:
        out(tok)
    return 0
