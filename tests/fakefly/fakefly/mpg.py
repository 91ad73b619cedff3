"""`fly mpg`: Managed Postgres clusters, modelled from flyctl v0.4.87's source.

Files cited below are under internal/command/mpg/ (commands), internal/command/mpg/v2/
(what a v2 cluster does: every new cluster is v2, create.go) and internal/uiex/mpg/v2/client.go
(JSON shapes and the API errors flyctl wraps). State lives in `state["mpg"]["clusters"]`, one
record per cluster id; destroyed clusters stay with `deleted: true` (listed by `--deleted`).

The data plane is not modelled here: `mpg proxy` forwards to what `services.json` maps for
`<cluster direct IP>:5432`, and `mpg restore` / `mpg destroy` call `$FAKEFLY_PITR_HOOK` (when set)
so a test can build or drop the restored cluster's real database:

    $FAKEFLY_PITR_HOOK restore --product mpg --source SRC_ID --target NEW_ID --at <RFC3339|backup:ID> --home $FAKEFLY_HOME
    $FAKEFLY_PITR_HOOK destroy --product mpg --target ID --home $FAKEFLY_HOME

A failing restore hook fails the restore (exit 1, the new cluster left in status `error`);
a failing destroy hook is ignored.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import random
import string
import subprocess
import time
from datetime import UTC, datetime, timedelta
from urllib.parse import quote, urlsplit, urlunsplit

from . import flyconfig
from . import model as M
from . import state as S
from .cli import FlyError, current_token, record_event
from .commands import app_name, bump_secrets_version, err, handler, load_config, nargs, out, resolve_org

#: internal/command/mpg/plans.go MPGPlans (the "Performance" key is capitalised there)
PLANS = {
    "basic": ("Basic", "Shared x 2", "1 GB", 38),
    "starter": ("Starter", "Shared x 2", "2 GB", 72),
    "launch": ("Launch", "Performance x 2", "8 GB", 282),
    "scale": ("Scale", "Performance x 4", "33 GB", 962),
    "Performance": ("Performance", "Performance x 8", "64 GB", 1922),
}
#: Regions that offer Managed Postgres come from the API (v2/regions/regions.go
#: GetAvailableMPGRegions); the stand-in's list is $FAKEFLY_MPG_REGIONS, else these.
DEFAULT_REGIONS = "ams fra iad lax lhr nrt ord sin sjc syd yyz"
DEFAULT_USER, DEFAULT_DB = "fly-user", "fly-db"
NON_INTERACTIVE = "prompt: non interactive"  # internal/prompt/prompt.go ErrNonInteractive


# ------------------------------------------------------------------ helpers


def _require_macaroon(opts) -> None:
    """mpg.go requireMacaroonToken: fly-go tokens.Parse counts fm1r_/fm1a_/fm2_ as macaroons."""
    toks = [t.strip() for t in current_token(opts).split(",")]
    if not any(t.split("_", 1)[0] in ("fm1r", "fm1a", "fm2") for t in toks if "_" in t):
        raise FlyError("MPG commands require updated tokens but found older-style tokens.",
                       extra=["", "Please upgrade your authentication by running:", "  flyctl auth logout",
                              "  flyctl auth login"])


def _clusters(st: dict) -> dict:
    return st.setdefault("mpg", {}).setdefault("clusters", {})


def _cluster(st: dict, cluster_id: str | None) -> dict:
    """mpg.go ClusterFromArgOrSelect: an id, or a picker (which needs a terminal)."""
    if not cluster_id:
        raise FlyError(NON_INTERACTIVE)
    c = _clusters(st).get(cluster_id)
    if c is None or c.get("deleted"):
        raise FlyError(f'managed postgres cluster "{cluster_id}" not found')
    return c


def _new_id() -> str:
    return "".join(random.choice(string.ascii_lowercase + string.digits) for _ in range(15))


def _direct_ip(cluster_id: str) -> str:
    h = hashlib.sha256(cluster_id.encode()).digest()
    return str(ipaddress.IPv6Address(bytes.fromhex("fdaa0000") + h[:12]))


def _pgbouncer_uri(c: dict) -> str:
    cr = c["credentials"]
    return f"postgresql://{cr['user']}:{quote(cr['password'], safe='')}@pgbouncer.{c['id']}.flympg.net/{cr['dbname']}"


def _org_json(st: dict, slug: str) -> dict:
    return M.org_full(st, slug)


def list_json(st: dict, c: dict) -> dict:
    """uiex/mpg/v1/client.go ManagedCluster (what `mpg list --json` renders)."""
    return {"id": c["id"], "mpgd_cluster_id": c["mpgd_cluster_id"], "version": 2, "name": c["name"],
            "region": c["region"], "status": c["status"], "plan": c["plan"], "disk": c["disk"],
            "replicas": c["replicas"], "organization": _org_json(st, c["org"]),
            "ip_assignments": {"direct": c["direct"]}, "attached_apps": list(c["attached_apps"])}


def status_json(st: dict, c: dict) -> dict:
    """uiex/mpg/v2/client.go GetClusterResponse: data (ManagedCluster) and credentials."""
    cr = c["credentials"]
    return {
        "data": {"id": c["id"], "name": c["name"], "status": c["status"], "engine": "postgres", "plan": c["plan"],
                 "region": c["region"], "organization": _org_json(st, c["org"]),
                 "mpgd_cluster_id": c["mpgd_cluster_id"], "disk": c["disk"], "replicas": c["replicas"],
                 "ip_assignments": {"direct": c["direct"]}, "attached_apps": list(c["attached_apps"])},
        "credentials": {"status": c["status"], "user": cr["user"], "password": cr["password"],
                        "dbname": cr["dbname"], "pgbouncer_uri": _pgbouncer_uri(c)},
    }


def _rfc3339(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_rfc3339(text: str) -> datetime | None:
    """Go time.Parse(time.RFC3339, ...): a T, seconds and an explicit offset (Z or ±hh:mm)."""
    import re

    if not re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)", text or ""):
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def _hook(*args: str) -> int | None:
    hook = os.environ.get("FAKEFLY_PITR_HOOK")
    if not hook:
        return None
    home = os.environ.get("FAKEFLY_HOME", "")
    return subprocess.run([hook, *args, "--home", home], stdin=subprocess.DEVNULL, check=False).returncode


def _table(headers: list[str], rows: list[list[str]]) -> None:
    out("\t".join(h.upper() for h in headers))
    for r in rows:
        out("\t".join(str(x) for x in r))


# ------------------------------------------------------------------ test API


def set_credentials(home, cluster_id: str, *, user: str, password: str, dbname: str) -> None:
    """Point a cluster's default credentials at a real server's (tests)."""
    with S.mutate(home) as st:
        _clusters(st)[cluster_id]["credentials"] = {"user": user, "password": password, "dbname": dbname}


def seed_backup(home, cluster_id: str, *, kind: str, start: datetime, stop: datetime, status: str = "completed") -> str:
    """A backup Fly took at another time (tests)."""
    bid = f"backup_{int(start.timestamp())}_{random.getrandbits(64):016x}"
    with S.mutate(home) as st:
        _clusters(st)[cluster_id]["backups"].append(
            {"id": bid, "status": status, "type": kind, "start": _rfc3339(start), "stop": _rfc3339(stop)})
    return bid


def cluster_named(home, name: str) -> dict | None:
    found = [c for c in _clusters(S.load(home)).values() if c["name"] == name and not c.get("deleted")]
    return found[0] if found else None


# ------------------------------------------------------------------ commands


@handler("mpg list")
def mpg_list(home, opts, args):
    """list.go runList: orgs.OrgFromFlagOrSelect (--org, FLY_ORG, the first argument, else a
    picker); the text (not JSON) when there is no cluster, even with --json."""
    _require_macaroon(opts)
    nargs(args, 0, 1)
    st = S.load(home)
    slug = opts.get("org") or os.environ.get("FLY_ORG") or (args[0] if args else None)
    if not slug:
        raise FlyError("slug argument must be specified when not running interactively")
    if slug not in st["orgs"]:
        raise FlyError(f"failed retrieving organization with slug {slug}: Could not find Organization \"{slug}\"")
    deleted = bool(opts.get("deleted"))
    found = [c for c in _clusters(st).values() if c["org"] == slug and bool(c.get("deleted")) == deleted]
    if not found:
        out(f"No {'deleted ' if deleted else ''}managed postgres clusters found in organization {slug}")
        return 0
    if opts.get("json"):
        sys_out(M.dumps([list_json(st, c) for c in found]))
        return 0
    _table(["ID", "Name", "Org", "Region", "Status", "Plan", "Attached Apps"],
           [[c["id"], c["name"], c["org"], c["region"], c["status"], c["plan"],
             ", ".join(a["name"] for a in c["attached_apps"]) or "<no attached apps>"] for c in found])
    return 0


def sys_out(text: str) -> None:
    import sys

    sys.stdout.write(text)
    sys.stdout.flush()


@handler("mpg status")
def mpg_status(home, opts, args):
    """status.go / v2/run_status.go: --json is the whole GetClusterResponse, credentials included."""
    _require_macaroon(opts)
    nargs(args, 0, 1)
    st = S.load(home)
    c = _cluster(st, args[0] if args else None)
    if opts.get("json"):
        sys_out(M.dumps(status_json(st, c)))
        return 0
    out("Cluster Status")
    for k, v in (("ID", c["id"]), ("Name", c["name"]), ("Organization", c["org"]), ("Region", c["region"]),
                 ("Status", c["status"]), ("Allocated Disk (GB)", c["disk"]), ("Replicas", c["replicas"]),
                 ("Direct IP", c["direct"])):
        out(f"  {k} = {v}")
    return 0


@handler("mpg create")
def mpg_create(home, opts, args):
    """create.go runCreate + v2/run_create.go RunCreate. Provisioning is instant here: the
    cluster is `ready` at the first poll, or `error` for a name in $FAKEFLY_MPG_FAIL
    (flyctl then fails with `cluster creation failed`, the cluster left behind)."""
    _require_macaroon(opts)
    nargs(args, 0, 0)
    name = opts.get("name")
    if not name:
        cfg, _ = load_config({})  # appconfig.NameFromContext: a fly.toml in the working directory
        if cfg and cfg.get("app"):
            name = cfg["app"] + "-db"
        else:
            raise FlyError("name argument or flag must be specified when not running interactively")
    st = S.load(home)
    org = resolve_org(st, opts)  # prompt.Org
    major = opts.get("pg-major-version")
    major = 16 if major is None else major
    if major not in (16, 17):
        raise FlyError(f"invalid Postgres major version: {major}. Supported versions are 16 and 17")
    plan = (opts.get("plan") or "").strip().lower()  # normalizePlan
    if plan not in PLANS:
        plan = "basic"  # not interactive: "Default to basic" (also for every spelling of Performance)
    regions = [r for r in (os.environ.get("FAKEFLY_MPG_REGIONS") or DEFAULT_REGIONS).replace(",", " ").split() if r]
    region = opts.get("region")
    if not region:
        raise FlyError(NON_INTERACTIVE)  # prompt.Select of the MPG regions
    if region not in regions:
        raise FlyError(f"region {region} is not available for Managed Postgres. Available regions: [{' '.join(regions)}]")
    size = opts.get("volume-size")
    size = 10 if size is None else size
    failing = name in [s.strip() for s in os.environ.get("FAKEFLY_MPG_FAIL", "").split(",") if s.strip()]
    cid = _new_id()
    with S.mutate(home) as st:
        _clusters(st)[cid] = {
            "id": cid, "mpgd_cluster_id": _new_id(), "name": name, "org": org, "region": region,
            "status": "error" if failing else "ready", "plan": plan, "disk": size, "replicas": 0,
            "pg_major_version": major, "postgis": bool(opts.get("enable-postgis-support")),
            "direct": _direct_ip(cid), "attached_apps": [], "backups": [], "created_at": time.time(),
            "credentials": {"user": DEFAULT_USER, "password": "".join(random.choice(string.ascii_letters + string.digits)
                                                                     for _ in range(24)), "dbname": DEFAULT_DB},
        }
        c = _clusters(st)[cid]
        uri = _pgbouncer_uri(c)
    record_event(home, {"type": "mpg_create", "id": cid, "name": name, "region": region, "plan": plan})
    shown, cpu, mem, price = PLANS[plan]
    out(f"Selected Plan: {shown}")
    out(f"  CPU: {cpu}")
    out(f"  Memory: {mem}")
    out(f"  Price: ${price} per month")
    out()
    out(f"Waiting for cluster {name} ({cid}) to be ready...")
    out(f"You can view the cluster in the UI at: https://fly.io/dashboard/{org}/managed_postgres/{cid}")
    out("You can cancel this wait with Ctrl+C - the cluster will continue provisioning in the background.")
    out(f"Once ready, you can connect to the database with: fly mpg connect {cid}")
    out()
    if failing:
        raise FlyError("cluster creation failed")
    out()
    out("Managed Postgres cluster created successfully!")
    out(f"  ID: {cid}")
    out(f"  Name: {name}")
    out(f"  Organization: {org}")
    out(f"  Region: {region}")
    out(f"  Plan: {plan}")
    out(f"  Disk: {size}GB")
    out(f"  PostGIS: {'true' if opts.get('enable-postgis-support') else 'false'}")
    out(f"  Connection string: {uri}")
    return 0


@handler("mpg attach")
def mpg_attach(home, opts, args):
    """attach.go runAttach + v2/run_attach.go RunAttach, non-interactive: the default user,
    --database or the default database; refuses an app that has the variable already; sets
    it (appsecrets.Update: config.yml minvers too), then records the attachment."""
    _require_macaroon(opts)
    nargs(args, 0, 1)
    name = app_name(opts)
    st = S.load(home)
    app = st["apps"].get(name)
    if app is None:
        raise FlyError(f'failed retrieving app {name}: Could not find App "{name}"')
    cid = args[0] if args else ""
    try:
        c = _cluster(st, cid)
    except FlyError as e:
        raise FlyError(f"failed retrieving cluster {cid}: {e.message}") from None
    if app["org"] != c["org"]:
        raise FlyError(f"app {name} is in organization {app['org']}, but cluster {cid} is in organization {c['org']}. "
                       "They must be in the same organization to attach")
    user = opts.get("username")
    if isinstance(user, list):
        user = ",".join(user)
    if user and user != c["credentials"]["user"]:
        raise FlyError(f"failed retrieving credentials for user {user}: cluster {cid} or user {user} not found")
    db = opts.get("database") or c["credentials"]["dbname"]
    var = opts.get("variable-name") or "DATABASE_URL"
    if var in app["secrets"]:
        raise FlyError(f"app {name} already has {var} set. Use 'fly secrets unset {var}' to remove it first")
    parts = urlsplit(_pgbouncer_uri(c))
    cr = c["credentials"]
    netloc = f"{quote(cr['user'], safe='')}:{quote(cr['password'], safe='')}@{parts.hostname}"
    url = urlunsplit((parts.scheme, netloc, "/" + db, "", ""))
    with S.mutate(home) as st:
        target = st["apps"][name]
        target["secrets"][var] = S.secret_record(url)
        version = bump_secrets_version(target)
    flyconfig.set_minvers(name, version)
    with S.mutate(home) as st:
        apps = _clusters(st)[cid]["attached_apps"]
        if not any(a["name"] == name for a in apps):
            apps.append({"name": name, "id": int(hashlib.sha256(name.encode()).hexdigest()[:8], 16)})
    record_event(home, {"type": "mpg_attach", "cluster": cid, "app": name, "variable": var, "database": db})
    out()
    out(f"Postgres cluster {cid} is being attached to {name}")
    out(f"The following secret was added to {name}:\n  {var}={url}")
    return 0


@handler("mpg proxy")
def mpg_proxy(home, opts, args):
    """proxy.go runProxy + v2/run_proxy.go GetMpgProxyParams: the credential and IP checks,
    then a tunnel to [<direct IP>]:5432 (forwarded per services.json, fakefly/proxy.py)."""
    from .proxy import run_proxy

    _require_macaroon(opts)
    nargs(args, 0, 1)
    st = S.load(home)
    c = _cluster(st, args[0] if args else None)
    if c["status"] == "initializing":
        raise FlyError("cluster is still initializing, wait a bit more")
    if c["status"] == "error" or not c["credentials"].get("password"):
        raise FlyError("error getting cluster password")
    if not c["direct"]:
        raise FlyError("error getting cluster IP")
    port = opts.get("local-port") or "16380"
    if not str(port).isdigit():
        raise FlyError(f"invalid port specification: {port}")
    return run_proxy(home, st, host=c["direct"], local_port=int(port), remote_port=5432,
                     bind=opts.get("bind-addr") or "127.0.0.1", watch_stdin=False)


@handler("mpg destroy")
def mpg_destroy(home, opts, args):
    """destroy.go / v2/run_destroy.go: exactly one id; --yes when not interactive."""
    _require_macaroon(opts)
    nargs(args, 1)
    cid = args[0]
    st = S.load(home)
    c = _cluster(st, cid)
    if not opts.get("yes"):
        err("Destroying a managed Postgres cluster is not reversible. All data will be permanently lost.")
        raise FlyError("--yes flag must be specified when not running interactively")
    with S.mutate(home) as st:
        rec = _clusters(st)[cid]
        rec["deleted"] = True
        rec["status"] = "deleted"
    record_event(home, {"type": "mpg_destroy", "id": cid, "name": c["name"]})
    _hook("destroy", "--product", "mpg", "--target", cid)  # its failure is ignored
    out(f"Managed Postgres cluster {c['name']} ({cid}) scheduled to be destroyed (may take some time)")
    return 0


@handler("mpg backup list")
def mpg_backup_list(home, opts, args):
    """backup.go runBackupList + v2/run_backup.go RunBackupList: texts instead of JSON when
    there is none (or none in the last 24 hours without --all)."""
    _require_macaroon(opts)
    nargs(args, 0, 1)
    st = S.load(home)
    c = _cluster(st, args[0] if args else None)
    backups = c["backups"]
    if not backups:
        out(f"No backups found for cluster {c['id']}")
        return 0
    if not opts.get("all"):
        cutoff = datetime.now(UTC) - timedelta(hours=24)
        backups = [b for b in backups if (_parse_rfc3339(b["start"]) or cutoff + timedelta(seconds=1)) > cutoff]
    if not backups:
        out(f"No backups found for cluster {c['id']} in the last 24 hours (use --all to see all backups)")
        return 0
    if opts.get("json"):
        sys_out(M.dumps(backups))
        return 0
    _table(["ID", "Start", "Status", "Type"], [[b["id"], b["start"], b["status"], b["type"]] for b in backups])
    return 0


@handler("mpg backup create")
def mpg_backup_create(home, opts, args):
    """backup.go runBackupCreate + v2/run_backup.go RunBackupCreate. Fly queues it; here it
    is `completed` at once (start = stop = now)."""
    _require_macaroon(opts)
    nargs(args, 0, 1)
    st = S.load(home)
    c = _cluster(st, args[0] if args else None)
    kind = opts.get("type") or "full"
    if kind not in ("full", "incr"):
        raise FlyError("--type must be either 'full' or 'incr'")
    out(f"Creating {kind} backup for cluster {c['id']}...")
    now = datetime.now(UTC)
    seed_backup(home, c["id"], kind=kind, start=now, stop=now)
    out("Backup queued successfully!")
    return 0


@handler("mpg restore")
def mpg_restore(home, opts, args):
    """restore.go runRestore (its flag checks, in its order) + v2/run_restore.go RunRestore.
    The server's side is not in flyctl: an unknown backup id or a time outside the window
    (the oldest completed full backup's stop .. now) fail as the client wraps a 422
    (`failed to restore cluster (status 422): ...`; the body's words are the stand-in's). The
    new cluster copies the source's region, plan, disk and credentials (a physical copy
    keeps its roles) and is `ready` at once, unless $FAKEFLY_PITR_HOOK fails."""
    _require_macaroon(opts)
    nargs(args, 0, 1)
    backup_id, pitr, name = opts.get("backup-id") or "", opts.get("pitr-time") or "", opts.get("name") or ""
    if not backup_id and not pitr:
        raise FlyError("one of --backup-id or --pitr-time is required")
    if backup_id and pitr:
        raise FlyError("--backup-id and --pitr-time are mutually exclusive")
    at = None
    if pitr:
        at = _parse_rfc3339(pitr)
        if at is None:
            raise FlyError("--pitr-time must be an RFC3339 timestamp with an explicit offset (e.g. 2026-06-01T12:00:00Z): "
                           f'parsing time "{pitr}" as "2006-01-02T15:04:05Z07:00": cannot parse "{pitr}" as "2006"')
    st = S.load(home)
    src = _cluster(st, args[0] if args else None)
    if backup_id:
        out(f"Restoring cluster {src['id']} from backup {backup_id}...")
    else:
        out(f"Restoring cluster {src['id']} to point in time {pitr}...")
    done = [b for b in src["backups"] if b["status"] == "completed"]
    if backup_id and not any(b["id"] == backup_id for b in done):
        raise FlyError(f'failed to restore cluster: failed to restore cluster (status 422): {{"error":"backup {backup_id} not found"}}')
    if at is not None:
        fulls = [_parse_rfc3339(b["stop"]) for b in done if b["type"] == "full"]
        earliest = min((f for f in fulls if f), default=None)
        if earliest is None or at < earliest or at > datetime.now(UTC):
            raise FlyError("failed to restore cluster: failed to restore cluster (status 422): "
                           '{"error":"pitr_time is outside the recovery window"}')
    cid = _new_id()
    new_name = name or f"{src['name']}-restore-{random.randint(1000, 9999)}"
    with S.mutate(home) as st:
        s = _clusters(st)[src["id"]]
        _clusters(st)[cid] = {
            **{k: s[k] for k in ("org", "region", "plan", "disk", "replicas", "pg_major_version", "postgis")},
            "id": cid, "mpgd_cluster_id": _new_id(), "name": new_name, "status": "ready",
            "direct": _direct_ip(cid), "attached_apps": [], "backups": [], "created_at": time.time(),
            "credentials": dict(s["credentials"]),
            "restored_from": {"cluster": s["id"], "at": pitr or f"backup:{backup_id}"},
        }
    record_event(home, {"type": "mpg_restore", "source": src["id"], "target": cid, "at": pitr or f"backup:{backup_id}"})
    rc = _hook("restore", "--product", "mpg", "--source", src["id"], "--target", cid, "--at", pitr or f"backup:{backup_id}")
    if rc not in (None, 0):
        with S.mutate(home) as st:
            _clusters(st)[cid]["status"] = "error"
        raise FlyError(f"failed to restore cluster: failed to restore cluster (status 500): restore into {cid} failed")
    out("Restore initiated successfully!")
    out(f"  Cluster ID: {cid}")
    out(f"  Cluster Name: {new_name}")
    return 0
