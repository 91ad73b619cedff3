"""Command implementations. Each handler: (home, opts, args) -> exit code."""

from __future__ import annotations

import copy
import os
import random
import re
import string
import sys
import time
import tomllib
from pathlib import Path

from . import FLYCTL_VERSION, flyconfig
from . import model as M
from . import state as S
from .cli import FlyError, GoPanic, record_event
from .importparse import Panic as ParserPanic
from .importparse import ParseError
from .importparse import parse as parse_import

HANDLERS: dict = {}


def handler(*paths):
    def deco(fn):
        for p in paths:
            HANDLERS[tuple(p.split())] = fn
        return fn
    return deco


def out(text: str = "") -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def err(text: str = "") -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def env_list(name: str) -> list[str]:
    return [s.strip() for s in os.environ.get(name, "").split(",") if s.strip()]


def nargs(args, lo, hi=None):
    if hi is None:
        hi = lo
    if lo == hi and len(args) != lo:
        raise FlyError(f"accepts {lo} arg(s), received {len(args)}", usage=True)
    if len(args) < lo:
        raise FlyError(f"requires at least {lo} arg(s), only received {len(args)}", usage=True)
    if hi >= 0 and len(args) > hi:
        if lo == 0 and hi == 0:
            raise FlyError(f'unknown command "{args[0]}" for "flyctl {CURRENT[0]}"', usage=True)
        raise FlyError(f"accepts between {lo} and {hi} arg(s), received {len(args)}" if lo != hi else
                       f"accepts {lo} arg(s), received {len(args)}", usage=True)


CURRENT = [""]


def yes_required(opts, what="yes flag must be specified when not running interactively"):
    if not opts.get("yes"):
        raise FlyError(what)


# ------------------------------------------------------------------ config loading


def load_config(opts, cwd: Path | None = None, *, required_name=True):
    """Returns (config dict or None, path or None)."""
    cwd = cwd or Path.cwd()
    path = None
    given = opts.get("config")
    if given:
        p = Path(given)
        if not p.is_absolute():
            p = cwd / p
        if p.is_file():
            path = p
        elif (p / "fly.toml").is_file():
            path = p / "fly.toml"
        else:
            raise FlyError(f"config file not found at specified path: {given} (also tried: {os.path.join(given, 'fly.toml')})")
    else:
        for name in ("fly.toml", "fly.json"):
            if (cwd / name).is_file():
                path = cwd / name
                break
    if path is None:
        return None, None
    try:
        if path.suffix == ".json":
            import json
            cfg = json.loads(path.read_text())
        else:
            cfg = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, ValueError, UnicodeDecodeError) as e:
        raise FlyError(f"failed loading app config from {path}: {e}") from None
    return cfg, path


def app_name(opts, cfg=None, *, load=True) -> str:
    name = opts.get("app") or os.environ.get("FLY_APP")
    if not name:
        if cfg is None and load and "config" in opts:
            cfg, _ = load_config(opts)
        elif cfg is None and load:
            cfg, _ = load_config({})
        if cfg:
            name = cfg.get("app")
    if not name:
        raise FlyError("the config for your app is missing an app name, add an app field to the fly.toml file or specify with the -a flag")
    return name


def get_app(st, name, msg=None) -> dict:
    app = st["apps"].get(name)
    if app is None:
        raise FlyError(msg or f'Could not find App "{name}"')
    return app


def resolve_org(st, opts) -> str:
    slug = opts.get("org") or os.environ.get("FLY_ORG") or os.environ.get("FLY_ORGANIZATION")
    if slug:
        if slug not in st["orgs"]:
            raise FlyError(f'Could not find Organization "{slug}"')
        return slug
    orgs = st["orgs"]
    if len(orgs) == 1:
        only = next(iter(orgs))
        if orgs[only]["type"] == "PERSONAL":
            err(f"automatically selected personal organization: {orgs[only]['name']}")
            return only
    raise FlyError("org slug must be specified when not running interactively")


# ------------------------------------------------------------------ version


def cmd_version(home, opts, args):
    if opts.get("json"):
        out(M.dumps({"Name": "flyctl", "Version": FLYCTL_VERSION, "Commit": "fakefly", "BuildDate": "2026-08-21T00:00:00Z",
                     "OS": "linux", "Architecture": "amd64", "Environment": "production"}).rstrip("\n"))
    else:
        out(f"flyctl v{FLYCTL_VERSION} linux/amd64 Commit: fakefly BuildDate: 2026-08-21T00:00:00Z")
    return 0


HANDLERS[("version",)] = cmd_version


# ------------------------------------------------------------------ apps


@handler("apps create")
def apps_create(home, opts, args):
    nargs(args, 0, 1)
    name = args[0] if args else None
    if name and opts.get("name") and opts["name"] != name:
        raise FlyError(f"two app names specified {name} and {opts['name']}, only one may be specified")
    name = name or opts.get("name")
    if not name and opts.get("generate-name"):
        name = f"{random.choice(M.ADJ)}-{random.choice(M.NOUN)}-{random.randint(1000, 9999)}"
    if not name:
        raise FlyError("name argument or flag must be specified when not running interactively")
    with S.mutate(home) as st:
        org = resolve_org(st, opts)
        if not re.fullmatch(r"[a-z0-9][a-z0-9-]*", name) or len(name) > 63:
            raise FlyError(f"failed to create app: Name \"{name}\" is invalid: it must contain only lowercase letters, numbers, and dashes")
        if name in st["apps"]:
            raise FlyError("failed to create app: Name has already been taken",
                           extra=["", "App names are unique across all of Fly.io. Another app already uses this name. Try a different name."])
        app = S.new_app(name, org)
        if opts.get("network"):
            app["network"] = opts["network"]
        st["apps"][name] = app
        doc = M.app_json(st, app)
    if opts.get("save"):
        Path("fly.toml").write_text(f"app = '{name}'\n")
    if opts.get("json"):
        sys.stdout.write(M.dumps(doc))
    else:
        out(f"New app created: {name}")
    return 0


@handler("apps list")
def apps_list(home, opts, args):
    nargs(args, 0, 0)
    st = S.load(home)
    apps = [a for a in st["apps"].values() if not opts.get("org") or a["org"] == opts["org"]]
    apps.sort(key=lambda a: a["name"])
    if opts.get("json"):
        sys.stdout.write(M.dumps([M.app_json(st, a, full=False) for a in apps]))
    elif opts.get("quiet"):
        for a in apps:
            out(a["name"])
    elif not apps:
        out("No apps found")
    else:
        out("NAME\tOWNER\tSTATUS\tLATEST DEPLOY")
        for a in apps:
            last = a["releases"][-1]["created_at"][:19] + "Z" if a["releases"] else ""
            out(f"{a['name']}\t{a['org']}\t{a['status']}\t{last}")
        out()
    return 0


@handler("apps destroy")
def apps_destroy(home, opts, args):
    if not args:
        raise FlyError("no app names provided")
    if not opts.get("yes"):
        err("Destroying an app is not reversible.")
        yes_required(opts)
    for name in args:
        with S.mutate(home) as st:
            gone = get_app(st, name)
            del st["apps"][name]
        from . import pgbackup

        pgbackup.on_destroy(home, gone)  # a cluster `postgres backup restore` made: its server goes too
        flyconfig.delete_minvers(name)  # apps/destroy.go: appsecrets.DeleteMinvers
        out(f"Destroyed app {name}")
    return 0


# ------------------------------------------------------------------ status / machines / releases


def status_doc(st, app) -> dict:
    org = st["orgs"].get(app["org"], {})
    machines = [m for m in app["machines"] if M.is_active(m) and (app.get("postgres_role") or M.is_v2(m))]
    machines.sort(key=lambda m: m["id"], reverse=True)
    mj = []
    for m in machines:
        j = M.machine_json(m)
        if "checks" in j:
            j["checks"] = [c for c in j["checks"] if not c["name"].startswith("bg_deployments_compat")]
        mj.append(j)
    doc = {
        "AppURL": f"https://{app['name']}.fly.dev",
        "Deployed": app["deployed"],
        "Hostname": f"{app['name']}.fly.dev",
        "ID": app["id"],
        "Machines": mj,
        "Name": app["name"],
        "Organization": {"ID": org.get("id", ""), "InternalNumericID": org.get("internal_numeric_id", ""),
                         "Name": "", "Slug": app["org"], "RawSlug": "", "PaidPlan": org.get("paid_plan", False)},
        "PlatformVersion": app.get("platform_version", "machines"),
        "Status": app["status"],
        "Version": app["releases"][-1]["version"] if app["releases"] else 0,
    }
    if app.get("network") and app["network"] != "default":
        doc["Network"] = app["network"]
    return dict(sorted(doc.items()))


@handler("status")
def status(home, opts, args):
    nargs(args, 0, 0)
    if opts.get("watch") and opts.get("json"):
        raise FlyError("--watch and --json are not supported together")
    if opts.get("watch"):
        raise FlyError("--watch is not supported for non-interactive sessions")
    name = app_name(opts)
    st = S.load(home)
    app = get_app(st, name, f'failed to get app: Could not find App "{name}"')
    doc = status_doc(st, app)
    if opts.get("json"):
        sys.stdout.write(M.dumps(doc))
        return 0
    out("App")
    out(f"  Name     = {name}")
    out(f"  Owner    = {app['org']}")
    out(f"  Hostname = {name}.fly.dev")
    out(f"  Image    = {app.get('image') or '-'}")
    out()
    if not doc["Machines"]:
        out("No machines are available on this app")
    else:
        out("Machines")
        out("PROCESS\tID\tVERSION\tREGION\tSTATE\tROLE\tCHECKS\tLAST UPDATED")
        for m in doc["Machines"]:
            md = m["config"]["metadata"]
            checks = m.get("checks") or []
            passing = sum(1 for c in checks if c["status"] == "passing")
            cs = f"{passing} total, {passing} passing" if checks else ""
            out(f"{md.get('fly_process_group', '')}\t{m['id']}\t{md.get('fly_release_version', '')}\t{m['region']}\t{m['state']}\t\t{cs}\t{m['updated_at']}")
        out()
    return 0


@handler("machine list")
def machine_list(home, opts, args):
    nargs(args, 0, 0)
    name = app_name(opts)
    st = S.load(home)
    app = get_app(st, name, "failed to list machines: app not found")
    machines = [m for m in app["machines"] if m["state"] != "destroyed"]
    if opts.get("json"):
        sys.stdout.write(M.dumps([M.machine_json(m) for m in machines]))
    elif opts.get("quiet"):
        for m in machines:
            out(m["id"])
    elif not machines:
        out(f"No machines are available on this app {name}")
    else:
        out(f"{len(machines)} machines have been retrieved from app {name}.")
        out(f"View them in the UI here (https://fly.io/apps/{name}/machines/)")
        out()
        out(name)
        out("ID\tNAME\tSTATE\tCHECKS\tREGION\tROLE\tIMAGE\tIP ADDRESS\tVOLUME\tCREATED\tLAST UPDATED\tPROCESS GROUP\tSIZE")
        for m in machines:
            ir = m["image_ref"]
            vol = ",".join(x["volume"] for x in m["config"].get("mounts", []))
            out(f"{m['id']}\t{m['name']}\t{m['state']}\t\t{m['region']}\t\t{ir['repository']}:{ir['tag']}\t{m['private_ip']}\t{vol}\t{m['created_at']}\t{m['updated_at']}\t{M.group_of(m)}\t{M.size_name(m['config'].get('guest', {}))}")
        out()
    return 0


@handler("releases", "apps releases")
def releases(home, opts, args):
    nargs(args, 0, 0)
    name = app_name(opts)
    st = S.load(home)
    app = get_app(st, name)
    rels = list(reversed(app["releases"]))[:25]
    if opts.get("json"):
        sys.stdout.write(M.dumps([M.release_json(r, app) for r in rels]))
        return 0
    head = "VERSION\tSTATUS\tDESCRIPTION\tUSER\tDATE" + ("\tDOCKER IMAGE" if opts.get("image") else "")
    out(head)
    for r in rels:
        line = f"v{r['version']}\t{r['status']}\t{r['description']}\t{M.USER['Email']}\t{r['created_at'][:19]}Z"
        if opts.get("image"):
            line += "\t" + r.get("image_ref", "")
        out(line)
    out()
    return 0


# ------------------------------------------------------------------ machine run / destroy / stop / start


def kv_pairs(values, flagname):
    outd = {}
    for v in values or []:
        if "=" not in v:
            raise FlyError(f"invalid key/value pairs specified for flag {flagname}")
        k, val = v.split("=", 1)
        outd[k] = val
    return outd


def missing_images(st) -> set:
    return set(st.get("missing_images", [])) | set(env_list("FAKEFLY_MISSING_IMAGES"))


@handler("machine create")
def machine_create(home, opts, args):
    if not args:
        raise FlyError("requires at least 1 arg(s), only received 0", usage=True)
    return machine_run(home, opts, args, create_only=True)


@handler("machine run")
def machine_run(home, opts, args, create_only=False):
    image = args[0] if args else ""
    cmd = args[1:]
    if opts.get("id"):
        raise FlyError("to update an existing machine, use 'flyctl machine update'")
    if not image and not opts.get("dockerfile"):
        raise FlyError("image argument can't be an empty string")
    name = opts.get("app") or os.environ.get("FLY_APP")
    if not name:
        cfg, _ = load_config(opts)
        name = (cfg or {}).get("app")
    if not name:
        raise FlyError("prompt: non interactive")
    env = kv_pairs(opts.get("env"), "env")
    meta = kv_pairs(opts.get("metadata"), "metadata")
    restart = opts.get("restart")
    if restart is not None:
        if restart == "on-fail":
            err("Warning: --restart=on-fail is deprecated, use on-failure")
            restart = "on-failure"
        if restart not in ("no", "always", "on-failure", ""):
            raise FlyError("invalid restart provided")
    schedule = opts.get("schedule")
    with S.mutate(home) as st:
        app = st["apps"].get(name)
        if app is None:
            raise FlyError("prompt: non interactive")
        if image in missing_images(st):
            raise FlyError(f"failed to resolve image: image not found: {image}")
        if schedule is not None and schedule not in ("hourly", "daily", "weekly", "monthly"):
            raise FlyError(f"failed to launch VM: invalid schedule '{schedule}'")
        region = opts.get("region") or "iad"
        conf = {
            "env": env,
            "init": {"cmd": cmd} if cmd else {},
            "guest": M.guest_from(opts.get("vm-size")),
            "image": image,
            "metadata": meta,
        }
        if schedule:
            conf["schedule"] = schedule
        if opts.get("rm"):
            conf["auto_destroy"] = True
        policy = restart if restart is not None else ("no" if opts.get("rm") else ("on-failure" if schedule else None))
        if policy:
            conf["restart"] = {"policy": policy}
        m = M.make_machine(app, config=conf, region=region, name=opts.get("name"), secrets=M.secrets_snapshot(app),
                           state="created" if create_only or opts.get("standby-for") else "started")
        mid, iid, ip = m["id"], m["instance_id"], m["private_ip"]
    record_event(home, {"type": "machine_create" if create_only else "machine_run", "app": name, "machine": mid, "image": image, "cmd": cmd, "region": region})
    err(f"Searching for image '{image}' remotely...")
    err(f"image found: img_{S.short_id(12).lower()}")
    out(f"Image: {image}")
    out("Image size: 57 MB")
    out()
    out(f"Success! A Machine has been successfully {'created' if create_only else 'launched'} in app {name}")
    out(f" Machine ID: {mid}")
    out(f" Instance ID: {iid}")
    out(" State: created")
    if create_only or opts.get("standby-for"):
        return 0
    out()
    out(" Attempting to start machine...")
    out()
    if not opts.get("detach"):
        out("==> Monitoring health checks")
        out("No health checks found")
        out()
    out("Machine started, you can connect via the following private ip")
    out(f"  {ip}")
    return 0


def find_machine(st, mid, appname=None):
    apps = [st["apps"][appname]] if appname else list(st["apps"].values())
    for a in apps:
        for m in a["machines"]:
            if m["id"] == mid and m["state"] != "destroyed":
                return a, m
    return None, None


def _machine_ids(home, opts, args, st):
    if not args:
        if not (opts.get("app") or os.environ.get("FLY_APP")):
            raise FlyError("a machine ID or an app name is required")
        raise FlyError("a machine ID must be specified when not running interactively")
    appname = opts.get("app") or os.environ.get("FLY_APP")
    if appname and appname not in st["apps"]:
        raise FlyError(f'Could not find App "{appname}"')
    if not appname:
        a, m = find_machine(st, args[0])
        if a is None:
            raise FlyError(f"could not get machine {args[0]}: machine not found")
        appname = a["name"]
    return appname


@handler("machine destroy")
def machine_destroy(home, opts, args):
    with S.mutate(home) as st:
        appname = _machine_ids(home, opts, args, st)
    for mid in args:
        with S.mutate(home) as st:
            app = st["apps"][appname]
            m = next((x for x in app["machines"] if x["id"] == mid), None)
            if m is None:
                raise FlyError(f"machine {mid} was not found in app '{appname}'")
            stt = m["state"]
            if stt == "destroyed":
                raise FlyError(f"machine {mid} has already been destroyed")
            if stt == "started" and not opts.get("force"):
                raise FlyError(f"machine {mid} currently started, either stop first or use --force flag")
            if stt not in ("started", "stopped", "suspended") and not opts.get("force"):
                raise FlyError(f"machine {mid} is in a {stt} state and cannot be destroyed since it is not stopped or suspended, either stop first or use --force flag")
            out(f"machine {mid} was found and is currently in {stt} state, attempting to destroy...")
            app["machines"].remove(m)
            for v in app["volumes"]:
                if v["attached_machine_id"] == mid:
                    v["attached_machine_id"] = None
                    v["attached_alloc_id"] = None
        out(f"{mid} has been destroyed")
    return 0


@handler("machine stop")
def machine_stop(home, opts, args):
    with S.mutate(home) as st:
        appname = _machine_ids(home, opts, args, st)
        app = st["apps"][appname]
        for mid in args:
            m = next((x for x in app["machines"] if x["id"] == mid and x["state"] != "destroyed"), None)
            if m is None:
                raise FlyError(f"could not stop machine {mid}: machine not found")
            out(f"Sending kill signal to machine {mid}...")
            m["state"] = "stopped"
            m["updated_at"] = S.rfc3339()
            out(f"{mid} has been successfully stopped")
    return 0


@handler("machine start")
def machine_start(home, opts, args):
    with S.mutate(home) as st:
        appname = _machine_ids(home, opts, args, st)
        app = st["apps"][appname]
        for mid in args:
            m = next((x for x in app["machines"] if x["id"] == mid and x["state"] != "destroyed"), None)
            if m is None:
                raise FlyError(f"could not start machine {mid}: machine not found")
            m["state"] = "started"
            m["updated_at"] = S.rfc3339()
            out(f"{mid} has been started")
    return 0


# ------------------------------------------------------------------ deploy

STRATEGIES = ("canary", "rolling", "bluegreen", "immediate")


def validate_config(cfg: dict) -> list[str]:
    """Returns reasons (errors). Empty = valid."""
    reasons = []
    dep = cfg.get("deploy") or {}
    strat = dep.get("strategy")
    if strat and strat not in STRATEGIES:
        reasons.append(f"unsupported deployment strategy '{strat}'")
    mounts = cfg.get("mounts") or []
    if isinstance(mounts, dict):
        mounts = [mounts]
    if strat == "canary" and mounts:
        reasons.append("error canary deployment strategy is not supported when using mounted volumes")
    seen = set()
    for m in mounts:
        for g in (m.get("processes") or M.process_groups(cfg)):
            if g in seen:
                reasons.append(f"group '{g}' has more than one [[mounts]] section defined")
            seen.add(g)
    for name, c in (cfg.get("checks") or {}).items():
        iv = c.get("interval")
        if iv and _dur(iv) is not None and _dur(iv) < 2:
            reasons.append(f"Check '{name}' interval is too short: {iv}, minimum is 2 seconds")
        to = c.get("timeout")
        if to and _dur(to) is not None and _dur(to) > 60:
            reasons.append(f"Check '{name}' timeout is too long: {to}, maximum is 60 seconds")
    return reasons


def _dur(text) -> float | None:
    if isinstance(text, (int, float)):
        return float(text)
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h)", str(text).strip())
    if not m:
        return None
    mul = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[m.group(2)]
    return float(m.group(1)) * mul


def health_ok(appname: str) -> bool:
    return appname not in env_list("FAKEFLY_UNHEALTHY")


def _unattached_volumes(app: dict) -> dict[str, list[dict]]:
    """machines.go setVolumes: unattached, host-ok volumes of the app grouped by name (in list order)."""
    out: dict[str, list[dict]] = {}
    for v in app["volumes"]:
        if v["state"] == "created" and not v["attached_machine_id"] and v.get("host_status", "ok") == "ok":
            out.setdefault(v["name"], []).append(v)
    return out


def _pop_volume(pool: dict[str, list[dict]], name: str, region: str) -> dict | None:
    """machines.go popVolumeFor: the first unattached volume of that name in that region."""
    for i, v in enumerate(pool.get(name, [])):
        if not region or v["region"] == region:
            return pool[name].pop(i)
    return None


def should_skip_launch(orig: dict | None, conf: dict) -> bool:
    """machines_launchinput.go shouldSkipLaunch: a started/starting/failed machine is launched;
    a new standby and an existing machine in any other state (stopped, suspended, created)
    are updated but not started."""
    state = orig["state"] if orig is not None else "<not-set>"
    if state in ("started", "starting", "failed"):
        return False
    if conf.get("standbys"):
        return True
    return orig is not None


def validate_volume_config(app: dict, cfg: dict, pool: dict[str, list[dict]]) -> None:
    """machines.go validateVolumeConfig (runs before the release is created)."""
    machines = [m for m in app["machines"] if M.is_v2(m) and M.is_active(m)]
    for group in M.process_groups(cfg):
        mount = M.mount_for(cfg, group)
        ms = [m for m in machines if M.group_of(m) == group]
        if ms:
            needs: dict[str, int] = {}
            for m in ms:
                mm = m["config"].get("mounts") or []
                if mount and not mm:
                    needs[m["region"]] = needs.get(m["region"], 0) + 1
                if mm and mount and mm[0].get("name") and mm[0]["name"] != mount.get("source"):
                    raise FlyError(f"machine {m['id']} [{group}] can't update the attached volume {mount.get('source')} "
                                   f"with name '{mm[0]['volume']}' by '{mm[0]['name']}'")
            if needs:
                have: dict[str, int] = {}
                for v in pool.get(mount["source"], []):
                    have[v["region"]] = have.get(v["region"], 0) + 1
                missing = [f"{r}={n - have.get(r, 0)}" for r, n in needs.items() if n > have.get(r, 0)]
                if missing:
                    src = mount["source"]
                    raise FlyError(f"Process group '{group}' needs volumes with name '{src}' to fulfill mounts defined in fly.toml; "
                                   f"Run `fly volume create {src} -r REGION -n COUNT` for the following regions and counts: {' '.join(missing)}")
        elif mount and not pool.get(mount["source"]):
            src = mount["source"]
            raise FlyError(f"creating a new machine in group '{group}' requires an unattached '{src}' volume. "
                           f"Create it with `fly volume create {src}`")


def provision_volumes_on_first_deploy(app: dict, cfg: dict, pool: dict[str, list[dict]], volume_initial_size: int) -> list:
    """deploy_first.go provisionVolumesOnFirstDeploy: one volume per group with mounts, in the
    primary region, unless unattached volumes of that name exist in ANY region (they are
    counted, not their regions: such volumes elsewhere mean none is created here)."""
    lines = []
    existent = {name: len(vs) for name, vs in pool.items()}
    region = cfg.get("primary_region") or "iad"
    for group in M.process_groups(cfg):
        mount = M.mount_for(cfg, group)
        if not mount:
            continue
        src = mount.get("source")
        if existent.get(src, 0) > 0:
            existent[src] -= 1
            continue
        if mount.get("initial_size"):
            size = max(1, M.parse_memory_mb(mount["initial_size"]) // 1024)
        else:
            size = volume_initial_size or 1  # DefaultVolumeInitialSizeGB (machines.go)
        lines.append(("out", f"Creating a {size} GB volume named '{src}' for process group '{group}'. "
                             "Use 'fly vol extend' to increase its size"))
        pool.setdefault(src, []).append(M.new_volume(app, name=src, region=region, size=size))
    return lines


def _update_machine(m: dict, conf: dict, release: dict | None, secrets: dict, names: list[str], healthy: bool) -> bool:
    """Apply an update (machines_launchinput.go launchInputForUpdate / launchInputForRestart).
    Returns True when the machine was launched (and so waited for), False when skipped."""
    if conf.get("services") and conf.get("standbys"):
        # launchInputForUpdate: a standby whose group now has services stops being one
        conf.pop("standbys", None)
        conf.get("env", {}).pop("FLY_STANDBY_FOR", None)
    skip = should_skip_launch(m, conf)
    if release:
        conf["metadata"]["fly_release_id"] = release["id"]
        conf["metadata"]["fly_release_version"] = str(release["version"])
    m["config"] = conf
    m["image_ref"] = M.image_ref(conf.get("image", ""))
    m["_secrets"] = dict(secrets)
    m["version"] = S.ulid()
    m["updated_at"] = S.rfc3339()
    m["events"].append({"type": "update", "status": "replacing", "source": "user",
                        "timestamp": int(S.now().timestamp() * 1000)})
    if skip:  # updated, not started (waitForMachine returns at once for SkipLaunch)
        return False
    m["state"] = "started"
    M.set_checks(m, names, healthy)
    return True


def rollout(st, app, cfg, image, release, *, update_only=False, ha=True, vm_size=None,
            extra_env=None, restart_only=False, strategy="rolling"):
    """Create/update machines for a release, as machines_deploymachinesapp.go deployMachinesApp does.

    Returns (lines, failed_machine_id or None); raises FlyError when a machine cannot be
    created (the caller marks the release failed). New machines go to
    primary_region only (machines_launchinput.go launchInputForLaunch: `region :=
    md.appConfig.PrimaryRegion`); HA per deployCreateMachinesForGroups: a group with mounts
    gets 1 machine, a group with services 2, any other group 1 plus a standby (created,
    never started, config.standbys = [its id], env FLY_STANDBY_FOR)."""
    lines: list[tuple[str, str]] = []
    healthy = health_ok(app["name"])
    secrets = M.secrets_snapshot(app)
    region = cfg.get("primary_region") or "iad"
    failed = None
    pool = _unattached_volumes(app)
    existing = [m for m in app["machines"] if M.is_v2(m) and M.is_active(m)]
    have_groups = {M.group_of(m) for m in existing}
    # deployCreateMachinesForGroups: groups of the config without machines, sorted
    if not (update_only or restart_only):
        for group in sorted(g for g in M.process_groups(cfg) if g not in have_groups):
            _, names = M.checks_from_config(cfg, group)
            mount = M.mount_for(cfg, group)
            services = M.services_from_config(cfg, group)
            lines.append(("out", f"No machines in group {group}, launching a new machine"))

            def spawn(standby_for=None, group=group, mount=mount, names=names):
                conf = M.machine_config(cfg, group, image=image, release=release, region=region,
                                        extra_env=extra_env, vm_size=vm_size)
                vol = None
                if mount:
                    vol = _pop_volume(pool, mount.get("source"), region)
                    if vol is None:
                        raise FlyError("error creating machine configuration: "
                                       f"New machine in group '{group}' needs an unattached volume named "
                                       f"'{mount.get('source')}' in region '{region}'")
                    conf["mounts"] = [{"volume": vol["id"], "path": mount.get("destination", "/data"),
                                       "name": mount.get("source"), "size_gb": vol["size_gb"],
                                       "encrypted": vol["encrypted"]}]
                if standby_for:
                    conf["standbys"] = list(standby_for)
                    conf["env"]["FLY_STANDBY_FOR"] = ",".join(standby_for)
                skip = should_skip_launch(None, conf)
                m = M.make_machine(app, config=conf, region=region, state="created" if skip else "started",
                                   check_names=[] if skip else names, healthy=healthy, secrets=secrets)
                if vol:
                    vol["attached_machine_id"] = m["id"]
                    vol["attached_alloc_id"] = m["id"]
                return m, skip

            first_m, _ = spawn()
            if names and not healthy:
                return lines, first_m["id"]
            if not ha or mount:
                continue
            if services:
                lines.append(("out", "Creating a second machine for high availability and zero downtime deployments."))
                lines.append(("out", 'To disable this, set "min_machines_running = 0" in your fly.toml.'))
                spawn()
            else:
                lines.append(("out", f"Creating a standby machine for {first_m['id']}"))
                spawn([first_m["id"]])
        if any(g not in have_groups for g in M.process_groups(cfg)):
            lines.append(("err", "Finished launching new machines"))
    # updateExistingMachines: the machines that existed before this deploy
    for group in M.process_groups(cfg):
        group_machines = [m for m in existing if M.group_of(m) == group]
        if not group_machines:
            continue
        _, names = M.checks_from_config(cfg, group)
        lines.append(("out", f"Updating existing machines in '{app['name']}' with {strategy} strategy"))
        for i, m in enumerate(group_machines, 1):
            if restart_only:
                conf = copy.deepcopy(m["config"])
            else:
                conf = M.machine_config(cfg, group, image=image, release=release, region=m["region"],
                                        extra_env=extra_env, vm_size=vm_size)
                if "mounts" in m["config"]:
                    conf["mounts"] = m["config"]["mounts"]
                if m["config"].get("standbys"):
                    conf["standbys"] = m["config"]["standbys"]
                    conf["env"]["FLY_STANDBY_FOR"] = ",".join(m["config"]["standbys"])
            launched = _update_machine(m, conf, release, secrets, names, healthy)
            if launched and names and not healthy and failed is None:
                failed = m["id"]
            what = "update failed" if failed == m["id"] else ("updated (not started: it was " + m["state"] + ")"
                                                              if not launched else "update succeeded")
            lines.append(("out", f"  [{i}/{len(group_machines)}] Machine {m['id']} [{group}] {what}"))
    return lines, failed


def _emit(lines):
    for stream, text in lines:
        (out if stream == "out" else err)(text)


@handler("deploy")
def deploy(home, opts, args):
    nargs(args, 0, 1)
    cwd = Path.cwd()
    if args:
        cwd = (cwd / args[0]).resolve()
        if not cwd.is_dir():
            raise FlyError(f"failed changing working directory: chdir {args[0]}: no such file or directory")
    cfg, path = load_config(opts, cwd)
    name = opts.get("app") or os.environ.get("FLY_APP") or (cfg or {}).get("app")
    if not name:
        raise FlyError("the config for your app is missing an app name, add an app field to the fly.toml file or specify with the -a flag")
    st0 = S.load(home)
    app0 = st0["apps"].get(name)
    if app0 is None:
        raise FlyError(f"the app name {name} could not be found, did you create the app or misspell it in the fly.toml file or via -a?")
    if cfg is None:
        cfg = copy.deepcopy(app0.get("config") or {})
    cfg = dict(cfg)
    cfg["app"] = name
    if opts.get("primary-region"):
        cfg["primary_region"] = opts["primary-region"]
    strategy = opts.get("strategy") or (cfg.get("deploy") or {}).get("strategy") or "rolling"
    if strategy not in STRATEGIES:
        raise FlyError(f"unsupported deployment strategy '{strategy}'")
    err("==> Verifying app config")
    out(f"Validating {path or ''}")
    reasons = validate_config(cfg)
    for r in reasons:
        out(r)
    if reasons:
        out()
        out("   ✘invalid app configuration")
        raise FlyError("App configuration is not valid")
    out("✓ Configuration is valid")
    err("--> Verified app config")
    for k in (cfg.get("env") or {}):
        if re.search(r"(?i)(secret|password|token|_key$)", k):
            err(f"WARNING: The environment variable '{k}' looks like a secret; consider using `fly secrets set` instead")
    build = cfg.get("build") or {}
    image = opts.get("image") or build.get("image")
    build_rec = None
    if not image:
        dockerfile = None
        if build.get("dockerfile"):
            base = path.parent if path else cwd
            dockerfile = (base / build["dockerfile"]).resolve()
        elif opts.get("dockerfile"):
            dockerfile = (cwd / opts["dockerfile"]).resolve()
        elif (cwd / "Dockerfile").is_file():
            dockerfile = cwd / "Dockerfile"
        if not dockerfile or not dockerfile.is_file():
            raise FlyError("app does not have a Dockerfile or buildpacks configured. See https://fly.io/docs/reference/configuration/#the-build-section")
        err("==> Building image")
        label = opts.get("image-label") or f"deployment-{S.ulid()}"
        image = f"registry.fly.io/{name}:{label}"
        build_rec = {"app": name, "image": image, "dockerfile": str(dockerfile), "context": str(cwd),
                     "build_args": {**(build.get("args") or {}), **kv_pairs(opts.get("build-arg"), "build-arg")},
                     "target": opts.get("build-target") or build.get("build-target"),
                     "remote_only": bool(opts.get("remote-only")), "local_only": bool(opts.get("local-only")),
                     "t": S.rfc3339_precise()}
        err("--> Building image done")
        out(f"image: {image}")
        out("image size: 75 MB")
    else:
        err(f"Searching for image '{image}' remotely...")
    if image in missing_images(st0):
        raise FlyError(f"failed to fetch an image or build from source: image not found: {image}")
    if not build_rec:
        err(f"image found: img_{S.short_id(12).lower()}")
    if opts.get("build-only"):
        with S.mutate(home) as st:
            st["builds"].append(build_rec or {"app": name, "image": image})
        return 0
    out()
    out(f"Watch your deployment at https://fly.io/apps/{name}/monitoring")
    out()
    extra_env = kv_pairs(opts.get("env"), "env")
    release_cmd = (cfg.get("deploy") or {}).get("release_command")
    fail_release_cmd = name in env_list("FAKEFLY_FAIL_RELEASE_COMMAND")
    error = None
    with S.mutate(home) as st:
        app = get_app(st, name)
        if build_rec:
            st["builds"].append(build_rec)
        # machines.go NewMachineDeployment: setVolumes -> setFirstDeploy -> provisionFirstDeploy
        # -> validateVolumeConfig -> createReleaseInBackend. Volumes provisioned for a first
        # deploy stay even when the validation after them fails (separate API calls).
        first = not app["deployed"] and not any(M.is_v2(m) and M.is_active(m) for m in app["machines"])
        lines = []
        pool = _unattached_volumes(app)
        if first and cfg.get("mounts"):
            lines += provision_volumes_on_first_deploy(app, cfg, pool, opts.get("volume-initial-size") or 0)
        try:
            validate_volume_config(app, cfg, pool)
        except FlyError as exc:
            error = exc
        if error is not None:
            _emit(lines)
            lines = []
        rel = None if error else M.new_release(app, image=image, reason="deploy", description="Deploy image",
                                               status="running", strategy=strategy)
        if error is None and release_cmd and not opts.get("skip-release-command"):
            lines.append(("out", f"Running {name} release_command: {release_cmd}"))
            record_event(home, {"type": "release_command", "app": name, "command": release_cmd, "release": rel["version"]})
            if fail_release_cmd:
                rel["status"] = "failed"
                error = FlyError("release command failed - aborting deployment. error release_command machine "
                                 f"{S.machine_id()} exited with non-zero status of 1")
                lines.append(("out", "  release_command failed"))
            else:
                lines.append(("out", "  release_command completed successfully"))
        if error is None:
            try:
                more, failed = rollout(st, app, cfg, image, rel, update_only=opts.get("update-only"),
                                       ha=opts.get("ha", True), vm_size=opts.get("vm-size"), extra_env=extra_env,
                                       strategy=strategy)
            except FlyError as exc:  # DeployMachinesApp: any error after the release -> status "failed"
                more, failed, error = [], None, exc
                rel["status"] = "failed"
            lines += more
            if error is not None:
                pass
            elif failed and not opts.get("detach"):
                rel["status"] = "failed"
                error = FlyError(f"timeout reached waiting for health checks to pass for machine {failed}: "
                                 "failed to get VM: context deadline exceeded",
                                 extra=[f"Check its logs with `fly logs -a {name} --machine {failed}`"])
            else:
                rel["status"] = "complete"
                app["status"] = "deployed"
                app["deployed"] = True
                app["config"] = cfg
                app["image"] = image
        if rel is not None:
            record_event(home, {"type": "deploy", "app": name, "release": rel["version"], "image": image,
                                "status": rel["status"], "strategy": strategy,
                                # machines_launchinput.go: MinSecretsVersion from the start-up snapshot
                                "min_secrets_version": flyconfig.min_secrets_version(name),
                                "secrets_version": app.get("secrets_version", 0)})
    _emit(lines)
    if error:
        raise error
    out()
    out(f"Visit your newly deployed app at https://{name}.fly.dev/")
    return 0


# ------------------------------------------------------------------ secrets


def deploy_secrets(home, name, *, stage=False, detach=False, from_deploy_cmd=False):
    if stage:
        out("Secrets have been staged, but not set on VMs. Deploy or update machines in this app for the secrets to take effect.")
        return 0
    error = None
    with S.mutate(home) as st:
        app = st["apps"][name]
        machines = [m for m in app["machines"] if M.is_v2(m) and M.is_active(m)]
        if not app["deployed"] and not machines:
            if from_deploy_cmd:
                raise FlyError("no machines available to deploy", extra=["", "Try 'fly deploy' first"])
            out("Secrets are staged for the first deployment")
            return 0
        if not machines:
            if from_deploy_cmd:
                raise FlyError("no machines available to deploy", extra=["", "Try 'fly deploy' first"])
            out("Secrets are staged for the first deployment")
            return 0
        cfg = app.get("config") or {"app": name}
        rel = M.new_release(app, image=app.get("image", ""), reason="secrets", description="Secrets updated",
                            status="running", strategy="rolling")
        lines, failed = rollout(st, app, cfg, app.get("image", ""), rel, restart_only=True)
        if failed and not detach:
            rel["status"] = "failed"
            error = FlyError(f"timeout reached waiting for health checks to pass for machine {failed}: "
                             "failed to get VM: context deadline exceeded")
        else:
            rel["status"] = "complete"
        record_event(home, {"type": "secrets_deploy", "app": name, "release": rel["version"], "status": rel["status"]})
    _emit(lines)
    if error:
        raise error
    return 0


def _secrets_app(home, opts):
    name = app_name(opts)
    st = S.load(home)
    if name not in st["apps"]:
        raise FlyError(f'Could not find App "{name}"')
    return name


def bump_secrets_version(app: dict) -> int:
    """The app's secrets version the Machines API returns from UpdateAppSecrets (resp.Version)."""
    app["secrets_version"] = app.get("secrets_version", 0) + 1
    return app["secrets_version"]


def _store_secrets(home, name, values: dict, unset: list | None = None):
    """appsecrets.Update (internal/appsecrets/secrets.go): UpdateAppSecrets on the server, then
    SetMinvers(app, resp.Version) in config.yml from this process's start-up snapshot."""
    with S.mutate(home) as st:
        app = st["apps"].get(name)
        if app is None:
            raise FlyError(f'Could not find App "{name}"')
        for k, v in values.items():
            old = app["secrets"].get(k)
            rec = S.secret_record(v)
            if old:
                rec["created_at"] = old["created_at"]
            app["secrets"][k] = rec
        for k in unset or []:
            app["secrets"].pop(k, None)
        version = bump_secrets_version(app)
    flyconfig.set_minvers(name, version)


@handler("secrets list")
def secrets_list(home, opts, args):
    name = app_name(opts)
    st = S.load(home)
    app = st["apps"].get(name)
    if app is None:
        raise FlyError("failed to list app secrets: app not found")
    machines = [m for m in app["machines"] if m["state"] not in ("destroyed", "destroying")]
    rel_time = {str(r["version"]): r["created_at"] for r in app["releases"]}
    rows = []
    for k in sorted(app["secrets"]):
        rec = app["secrets"][k]
        row = {"name": k, "digest": rec["digest"]}
        if len(machines) <= 100:
            if not machines:
                status_ = "Staged"
            else:
                newer = 0
                unknown = False
                for m in machines:
                    rt = rel_time.get((m["config"].get("metadata") or {}).get("fly_release_version", ""))
                    if rt is None:
                        unknown = True
                    elif rt > rec["updated_at"]:
                        newer += 1
                if unknown:
                    status_ = "Unknown"
                elif newer == len(machines):
                    status_ = "Deployed"
                elif newer == 0:
                    status_ = "Staged"
                else:
                    status_ = "Partial"
            row["status"] = status_
        rows.append(row)
    if opts.get("json"):
        sys.stdout.write(M.dumps(rows))
        return 0
    out("NAME\tDIGEST\tSTATUS")
    pending = 0
    for r in rows:
        prefix = {"Staged": "* ", "Partial": "! "}.get(r.get("status"), "")
        pending += bool(prefix)
        out(f"{prefix}{r['name']}\t{r['digest']}\t{r.get('status', '')}")
    out()
    if pending:
        noun = "secret" if pending == 1 else "secrets"
        verb = "is" if pending == 1 else "are"
        out(f"There {verb} {pending} {noun} not deployed. Deploy with `fly secrets deploy` to make them available.")
    return 0


@handler("secrets set")
def secrets_set(home, opts, args):
    if not args:
        raise FlyError("requires at least 1 arg(s), only received 0", usage=True)
    name = _secrets_app(home, opts)
    values = {}
    for a in args:
        if "=" not in a:
            raise FlyError(f"could not parse secrets: '{a}': must be in the format NAME=VALUE")
        k, v = a.split("=", 1)
        if v == "-":
            if sys.stdin is None or sys.stdin.isatty():
                raise FlyError(f"secret `{k}` expects standard input but none provided")
            data = sys.stdin.buffer.read(64 * 1024 + 1)
            v = data[: 64 * 1024].decode("utf-8", "replace").strip()
        values[k] = v
    _store_secrets(home, name, values)
    return deploy_secrets(home, name, stage=opts.get("stage"), detach=opts.get("detach"))


@handler("secrets unset")
def secrets_unset(home, opts, args):
    if not args:
        raise FlyError("requires at least 1 arg(s), only received 0", usage=True)
    name = _secrets_app(home, opts)
    _store_secrets(home, name, {}, unset=args)
    return deploy_secrets(home, name, stage=opts.get("stage"), detach=opts.get("detach"))


@handler("secrets import")
def secrets_import(home, opts, args):
    name = _secrets_app(home, opts)
    data = "" if sys.stdin is None else sys.stdin.buffer.read().decode("utf-8", "replace")
    try:
        values = parse_import(data)
    except ParseError as e:
        raise FlyError(str(e)) from None
    except ParserPanic as e:  # secrets/parser.go parseSecrets: value[1:len-1] on a 1-byte value
        raise GoPanic(str(e)) from None
    _store_secrets(home, name, values)
    return deploy_secrets(home, name, stage=opts.get("stage"), detach=opts.get("detach"))


@handler("secrets deploy")
def secrets_deploy(home, opts, args):
    name = _secrets_app(home, opts)
    return deploy_secrets(home, name, detach=opts.get("detach"), from_deploy_cmd=True)


@handler("secrets sync")
def secrets_sync(home, opts, args):
    name = _secrets_app(home, opts)
    _store_secrets(home, name, {}, unset=[])  # appsecrets.Sync: Update with a bogus unset
    return deploy_secrets(home, name, stage=opts.get("stage"), detach=opts.get("detach"))


# ------------------------------------------------------------------ volumes


def _vol_app(home, opts):
    name = app_name(opts)
    return name


def volume_block(v, appname):
    rows = [("ID", v["id"]), ("Name", v["name"]), ("App", appname), ("Region", v["region"]),
            ("Zone", v["zone"]), ("Size GB", str(v["size_gb"])), ("Encrypted", str(v["encrypted"]).lower()),
            ("Created at", v["created_at"]), ("Snapshot retention", str(v["snapshot_retention"])),
            ("Scheduled snapshots", str(v["auto_backup_enabled"]).lower())]
    for k, val in rows:
        out(f"{k:>20}: {val}")


@handler("volumes list")
def volumes_list(home, opts, args):
    nargs(args, 0, 0)
    name = _vol_app(home, opts)
    st = S.load(home)
    app = st["apps"].get(name)
    if app is None:
        raise FlyError("failed retrieving volumes: failed to list volumes: app not found")
    vols = [v for v in app["volumes"] if opts.get("all") or v["state"] not in M.HIDDEN_VOLUME_STATES]
    if opts.get("json"):
        sys.stdout.write(M.dumps([M.volume_json(v) for v in vols]))
        return 0
    if not vols:
        out(f"No Volumes found for app {name}")
        return 0
    out("ID\tSTATE\tNAME\tSIZE\tREGION\tZONE\tENCRYPTED\tATTACHED VM\tCREATED AT")
    for v in vols:
        out(f"{v['id']}\t{v['state']}\t{v['name']}\t{v['size_gb']}GB\t{v['region']}\t{v['zone']}\t{str(v['encrypted']).lower()}\t{v['attached_machine_id'] or ''}\t{v['created_at']}")
    out()
    return 0


@handler("volumes create")
def volumes_create(home, opts, args):
    nargs(args, 1)
    volname = args[0]
    name = _vol_app(home, opts)
    region = opts.get("region") or os.environ.get("FLY_REGION")
    count = opts.get("count") or 1
    size = opts.get("size") if opts.get("size") is not None else 1
    if not re.fullmatch(r"[a-z0-9_]{1,30}", volname):
        raise FlyError("failed to create volume: Name may only contain lowercase letters, numbers, and underscores, and must be 30 characters or less")
    with S.mutate(home) as st:
        app = st["apps"].get(name)
        if app is None:
            raise FlyError(f'Could not find App "{name}"')
        if not region:
            raise FlyError("region code must be specified when not running interactively")
        exists = any(v["name"] == volname and v["state"] == "created" for v in app["volumes"])
        if not (opts.get("yes") or count > 1 or exists):
            err("Warning! Every volume is pinned to a specific physical host. You should create two or more volumes per application to avoid downtime. Learn more at https://fly.io/docs/volumes/overview/")
            yes_required(opts)
        created = [M.new_volume(app, name=volname, region=region, size=size,
                                unique_zone=opts.get("require-unique-zone", True),
                                app_wide=opts.get("unique-zone-app-wide"),
                                encrypted=not opts.get("no-encryption"),
                                retention=opts.get("snapshot-retention") or 5,
                                auto_backup=opts.get("scheduled-snapshots", True))
                   for _ in range(count)]
        created = [M.volume_json(v) for v in created]
    for v in created:
        if opts.get("json"):
            sys.stdout.write(M.dumps(v))
        else:
            volume_block(v, name)
            out()
    return 0


def _find_volume(st, vid, appname=None):
    for a in st["apps"].values():
        if appname and a["name"] != appname:
            continue
        for v in a["volumes"]:
            if v["id"] == vid:
                return a, v
    return None, None


def parse_extend_size(text, current):
    t = str(text).strip().lower()
    rel = t.startswith("+")
    if rel:
        t = t[1:]
    for suf in ("gb", "g"):
        if t.endswith(suf):
            t = t[: -len(suf)]
            break
    if not t.isdigit():
        raise FlyError(f"invalid volume size: {text}")
    n = int(t)
    return current + n if rel else n


@handler("volumes extend")
def volumes_extend(home, opts, args):
    nargs(args, 0, 1)
    if not args:
        raise FlyError("volume ID must be specified when not running interactively")
    if not opts.get("size"):
        raise FlyError("Volume size must be specified")
    appname = opts.get("app") or os.environ.get("FLY_APP")
    with S.mutate(home) as st:
        app, v = _find_volume(st, args[0], appname)
        if v is None or v["state"] != "created":
            raise FlyError("failed to extend volume: volume not found")
        new = parse_extend_size(opts["size"], v["size_gb"])
        if new <= v["size_gb"]:
            raise FlyError(f"failed to extend volume: new size must be greater than current size ({v['size_gb']}GB)")
        v["size_gb"] = new
        for m in app["machines"]:
            for mt in m["config"].get("mounts", []):
                if mt.get("volume") == v["id"]:
                    mt["size_gb"] = new
        attached = v["attached_machine_id"]
        doc = M.volume_json(v)
        appn = app["name"]
    if opts.get("json"):
        sys.stdout.write(M.dumps(doc))
        return 0
    volume_block(doc, appn)
    out()
    if attached:
        out("Your Machine got its volume size extended without needing a restart")
    else:
        out("You will need to stop and start your Machine to increase the size of the FS")
    return 0


@handler("volumes destroy")
def volumes_destroy(home, opts, args):
    if not args:
        raise FlyError("volume ID must be specified when not running interactively")
    if not opts.get("yes"):
        err("Deleting a volume is not reversible.")
        yes_required(opts)
    appname = opts.get("app") or os.environ.get("FLY_APP")
    for vid in args:
        with S.mutate(home) as st:
            app, v = _find_volume(st, vid, appname)
            if v is None or v["state"] in M.HIDDEN_VOLUME_STATES:
                raise FlyError(f"failed to destroy volume: volume {vid} not found")
            if v["attached_machine_id"] and any(m["id"] == v["attached_machine_id"] and m["state"] == "started" for m in app["machines"]):
                raise FlyError(f"failed to destroy volume: volume {vid} is attached to machine {v['attached_machine_id']}, destroy the machine first")
            v["state"] = "pending_destroy"
            vname = v["name"]
        out(f"Destroyed volume ID: {vid} name: {vname}")
    return 0


# ------------------------------------------------------------------ ssh console


def machine_env(app, m) -> dict:
    env = dict((m.get("config") or {}).get("env") or {})
    env.update(m.get("_secrets") or {})
    env["FLY_APP_NAME"] = app["name"]
    env["FLY_REGION"] = m["region"]
    env.setdefault("PRIMARY_REGION", (app.get("config") or {}).get("primary_region") or m["region"])
    env["FLY_MACHINE_ID"] = m["id"]
    env.setdefault("FLY_PROCESS_GROUP", M.group_of(m))
    env["FLY_PRIVATE_IP"] = m["private_ip"]
    env["FLY_IMAGE_REF"] = (m.get("config") or {}).get("image", "")
    env.setdefault("HOME", "/root")
    env.setdefault("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    return env


def run_remote(command: str, env: dict) -> int:
    import shlex
    try:
        argv = shlex.split(command)
    except ValueError:
        sys.stderr.write("sh: syntax error\n")
        return 2
    if not argv:
        return 0
    prog, rest = argv[0], argv[1:]
    if prog in ("sh", "bash", "/bin/sh", "/bin/bash") and rest[:1] == ["-c"] and len(rest) >= 2:
        return run_remote(rest[1], env)
    if prog in ("printenv", "/usr/bin/printenv"):
        if not rest:
            for k, v in env.items():
                sys.stdout.write(f"{k}={v}\n")
            return 0
        rc = 0
        for k in rest:
            if k in env:
                sys.stdout.write(env[k] + "\n")
            else:
                rc = 1
        return rc
    if prog in ("env", "/usr/bin/env") and not rest:
        for k, v in env.items():
            sys.stdout.write(f"{k}={v}\n")
        return 0
    if prog == "echo":
        sys.stdout.write(" ".join(rest) + "\n")
        return 0
    if prog == "true":
        return 0
    if prog == "false":
        return 1
    if prog == "exit":
        return int(rest[0]) if rest else 0
    if prog == "hostname":
        sys.stdout.write(env.get("FLY_MACHINE_ID", "") + "\n")
        return 0
    sys.stderr.write(f'exec: "{prog}": executable file not found in $PATH\n')
    return 127


@handler("ssh console")
def ssh_console(home, opts, args):
    nargs(args, 0, 1)
    name = app_name(opts)
    st = S.load(home)
    app = st["apps"].get(name)
    if app is None:
        raise FlyError(f'Could not find App "{name}"')
    if opts.get("select") and opts.get("machine"):
        raise FlyError("--machine can't be used with -s/--select")
    if opts.get("select"):
        raise FlyError("prompt: non interactive")
    started = [m for m in app["machines"] if m["state"] == "started"]
    if opts.get("machine"):
        m = next((x for x in started if x["id"] == opts["machine"]), None)
        if m is None:
            raise FlyError(f'--machine="{opts["machine"]}" not found/started')
        chosen = m
    else:
        cands = started
        if opts.get("process-group"):
            cands = [m for m in cands if M.group_of(m) == opts["process-group"]]
        if opts.get("region"):
            cands = [m for m in cands if m["region"] == opts["region"]]
        if not cands:
            raise FlyError(f"app {name} has no started VMs.\nIt may be unhealthy or not have been deployed yet.\nTry the following command to verify:\n\nfly status")
        chosen = cands[0]
        if len(cands) > 1:
            out(f"No machine specified, using {chosen['id']} in region {chosen['region']}")
    err(f"Connecting to {chosen['private_ip']}...")
    command = opts.get("command")
    if command is None:
        raise FlyError("fakefly: interactive ssh sessions are not supported; pass --command/-C")
    rc = run_remote(command, machine_env(app, chosen))
    sys.stdout.flush()
    if rc != 0:
        raise FlyError(f"ssh shell: Process exited with status {rc}")
    return 0


# ------------------------------------------------------------------ proxy


@handler("proxy")
def proxy(home, opts, args):
    nargs(args, 1, 2)
    from .proxy import run_proxy
    spec = args[0]
    local, _, remote = spec.partition(":")
    remote = remote or local
    if not local.isdigit() or not remote.isdigit():
        raise FlyError(f"invalid port specification: {spec}")
    name = opts.get("app") or os.environ.get("FLY_APP")
    if not name:
        cfg, _ = load_config(opts)
        name = (cfg or {}).get("app")
    st = S.load(home)
    if name and name not in st["apps"]:
        raise FlyError(f'Could not find App "{name}"')
    if name:
        org = st["apps"][name]["org"]
    else:
        org = resolve_org(st, opts)
    if len(args) == 2:
        host = args[1]
    elif name:
        host = f"{name}.internal"
    else:
        raise FlyError("app name or remote host must be specified")
    if not opts.get("quiet"):
        err(f"Opening a wireguard tunnel to {org}")
    return run_proxy(home, st, host=host, local_port=int(local), remote_port=int(remote),
                     bind=opts.get("bind-addr") or "127.0.0.1", watch_stdin=opts.get("watch-stdin"))


# ------------------------------------------------------------------ postgres

PG_NOTICE = ("WARNING: Unmanaged Fly Postgres is not supported by Fly.io Support and is deprecated; "
             "we recommend Managed Postgres instead: https://fly.io/docs/mpg/ (`fly mpg`)")


def _latency() -> float:
    try:
        return max(0.0, float(os.environ.get("FAKEFLY_LATENCY_MS", "0") or 0)) / 1000.0
    except ValueError:
        return 0.0


def _pw(n=16):
    return "".join(random.choice(string.ascii_letters + string.digits) for _ in range(n))


@handler("postgres create")
def pg_create(home, opts, args):
    err(PG_NOTICE)
    nargs(args, 0, 0)
    name = opts.get("name")
    if not name and opts.get("generate-name"):
        name = f"{random.choice(M.ADJ)}-{random.choice(M.NOUN)}-{random.randint(1000, 9999)}-db"
    if not name:
        raise FlyError("name argument or flag must be specified when not running interactively")
    if not opts.get("region") and not os.environ.get("FLY_REGION"):
        raise FlyError("region code must be specified when not running interactively")
    region = opts.get("region") or os.environ.get("FLY_REGION")
    n, vm, vol = opts.get("initial-cluster-size"), opts.get("vm-size"), opts.get("volume-size")
    if n is None or vm is None or vol is None:
        raise FlyError("prompt: non interactive")
    # flypg/launcher.go LaunchMachinesPostgres, in its order: create the app, allocate the
    # flycast address, set the cluster's secrets (appsecrets.Update -> config.yml minvers), then
    # per machine: volume, launch, WaitForStartOrStop; then, unless --detach, watch the checks
    # (watch.MachinesChecks, up to 5 min); only then print the credentials. A failed watch
    # returns its error (exit 1) with the cluster created and the password never shown
    # ($FAKEFLY_UNHEALTHY=<name> makes the checks critical; the error text is a guess).
    password = opts.get("password") or _pw(15)
    image = opts.get("image-ref") or "flyio/postgres-flex:16.8"
    healthy = health_ok(name)
    from . import pgbackup

    pgbackup.check_create(opts, M.guest_from(vm)["memory_mb"])  # --enable-backups: fakefly/pgbackup.py
    with S.mutate(home) as st:
        org = resolve_org(st, opts)
        if name in st["apps"]:
            raise FlyError("failed to create app: Name has already been taken")
        app = S.new_app(name, org, role="postgres_cluster")
        st["apps"][name] = app
        app["secrets"] = {k: S.secret_record(v) for k, v in {
            "OPERATOR_PASSWORD": password, "SU_PASSWORD": _pw(), "REPL_PASSWORD": _pw()}.items()}
        bucket = pgbackup.on_create(st, app, opts, M.guest_from(vm)["memory_mb"])
        rel = M.new_release(app, image=image, reason="deploy", description="Deploy image", status="complete")
        cfg = {"app": name, "primary_region": region, "env": {"PRIMARY_REGION": region},
               "mounts": [{"source": "pg_data", "destination": "/data"}]}
        for _ in range(n):
            v = M.new_volume(app, name="pg_data", region=region, size=vol)
            conf = M.machine_config(cfg, "app", image=image, release=rel, region=region, vm_size=vm)
            conf["mounts"] = [{"volume": v["id"], "path": "/data", "name": "pg_data", "size_gb": vol, "encrypted": True}]
            conf["metadata"]["fly-managed-postgres"] = "true"
            m = M.make_machine(app, config=conf, region=region, check_names=["pg", "role", "vm"],
                               secrets=M.secrets_snapshot(app), healthy=healthy)
            v["attached_machine_id"] = m["id"]
        app["status"] = "deployed"
        app["deployed"] = True
        app["config"] = cfg
        app["image"] = image
        flycast = f"fdaa:0:{random.randint(0x1000, 0xffff):x}:0:1::{random.randint(2, 250):x}"
        app["pg"] = {"password": password, "flycast": flycast, "users": ["postgres", "flypgadmin", "repmgr"],
                     "databases": ["postgres"]}
        version = bump_secrets_version(app)
        ids = [m["id"] for m in app["machines"]]
    flyconfig.set_minvers(name, version)  # launcher.go setSecrets -> appsecrets.Update
    record_event(home, {"type": "postgres_create", "app": name, "region": region, "size": n})
    out(f"Creating postgres cluster in organization {org}")
    out("Creating app...")
    if bucket:
        out("Creating Tigris bucket for backup storage")
    out("Setting secrets on app " + name + "...")
    for i, mid in enumerate(ids):
        out(f"Provisioning {i + 1} of {n} machines with image {image}")
        out("Waiting for machine to start...")
        out(f"Machine {mid} is started")
    if not opts.get("detach"):
        out("==> Monitoring health checks")
        if not healthy:
            raise FlyError(f"context deadline exceeded (Waiting for {3 * n} non-passing checks)")
        out()
    out(f"Postgres cluster {name} created")
    out("  Username:    postgres")
    out(f"  Password:    {password}")
    out(f"  Hostname:    {name}.internal")
    out(f"  Flycast:     {flycast}")
    out("  Proxy port:  5432")
    out("  Postgres port:  5433")
    out(f"  Connection string: postgres://postgres:{password}@{name}.flycast:5432")
    out()
    out("Save your credentials in a secure place -- you won't be able to see them again!")
    return 0


@handler("postgres attach")
def pg_attach(home, opts, args):
    err(PG_NOTICE)
    nargs(args, 1)
    pgname = args[0]
    name = app_name(opts)
    db = opts.get("database-name") or name.replace("-", "_").lower()
    user = opts.get("database-user") or name.replace("-", "_").lower()
    var = opts.get("variable-name") or "DATABASE_URL"
    # postgres/attach.go runAttachCluster is check-then-act, one API call at a time, no lock:
    # secrets list -> DatabaseExists -> UserExists -> AttachPostgresCluster -> CreateDatabase
    # (only if it did not exist) -> CreateUser -> appsecrets.Update. Each step below is its own
    # locked read or write, with the round trips of UserExists/AttachPostgresCluster
    # ($FAKEFLY_LATENCY_MS) between the check and the create, so two attaches at once can
    # both see "no database" and the second CreateDatabase then fails after its attachment
    # was registered (flypg/pg.go CreateDatabase; an error status >= 500 is returned as is,
    # "<status>: <text>", flypg/types.go; the server's text is not in flyctl: a guess).
    st = S.load(home)
    app = get_app(st, name)
    pg = get_app(st, pgname)
    if pg.get("postgres_role") != "postgres_cluster":
        raise FlyError(f"app {pgname} is not a postgres app")
    out("Checking for existing attachments")
    if var in app["secrets"]:
        raise FlyError(f"consumer app \"{name}\" already contains a secret named {var}")
    info = pg.get("pg") or {"users": ["postgres"], "databases": ["postgres"], "flycast": ""}
    db_exists = db in info["databases"]
    if db_exists and not opts.get("yes"):
        raise FlyError("prompt: non interactive")  # prompt.Confirm "Database ... already exists. Continue ...?"
    if user in info["users"]:
        raise FlyError(f"database user \"{user}\" already exists. Please specify a new database user via --database-user")
    time.sleep(_latency())
    out("Registering attachment")
    with S.mutate(home) as st:
        st["apps"][pgname].setdefault("pg", info).setdefault("attachments", []).append(
            {"app": name, "database": db, "user": user, "variable": var})
    if not db_exists:
        out("Creating database")
        with S.mutate(home) as st:
            dbs = st["apps"][pgname]["pg"]["databases"]
            if db in dbs:
                raise FlyError(f'500: pq: database "{db}" already exists')
            dbs.append(db)
    out("Creating user")
    pw = _pw(15)
    with S.mutate(home) as st:
        users = st["apps"][pgname]["pg"]["users"]
        if user in users:
            raise FlyError(f"failed executing create-user: 500: pq: role \"{user}\" already exists")
        users.append(user)
        host = f"{pgname}.flycast" if info.get("flycast") else f"top2.nearest.of.{pgname}.internal"
        url = f"postgres://{user}:{pw}@{host}:5432/{db}?sslmode=disable"
        target = st["apps"][name]
        target["secrets"][var] = S.secret_record(url)
        version = bump_secrets_version(target)
    flyconfig.set_minvers(name, version)  # appsecrets.Update
    record_event(home, {"type": "postgres_attach", "app": name, "postgres": pgname, "database": db, "user": user, "variable": var})
    out()
    out(f"Postgres cluster {pgname} is now attached to {name}")
    out(f"The following secret was added to {name}:")
    out(f"  {var}={url}")
    return 0


@handler("postgres list")
def pg_list(home, opts, args):
    err(PG_NOTICE)
    nargs(args, 0, 0)
    st = S.load(home)
    apps = sorted((a for a in st["apps"].values() if a.get("postgres_role") == "postgres_cluster"), key=lambda a: a["name"])
    if not apps:
        out("No postgres clusters found")
        return 0
    if opts.get("json"):
        sys.stdout.write(M.dumps([M.app_json(st, a, full=False) for a in apps]))
        return 0
    out("NAME\tOWNER\tSTATUS\tLATEST DEPLOY")
    for a in apps:
        out(f"{a['name']}\t{a['org']}\t{a['status']}\t")
    out()
    return 0


# ------------------------------------------------------------------ scale count


def converge_group_counts(expected_total: int, current: dict[str, int], regions: list[str], max_per_region: int) -> dict[str, int]:
    """scale/count_machines.go convergeGroupCounts, line for line: only the listed regions
    count; new machines go round-robin from the FIRST listed region (not to the least-filled
    one), skipping regions at --max-per-region; removals start from the SECOND region."""
    diffs: dict[str, int] = {}
    if not regions:
        regions = list(current)
    regions = list(dict.fromkeys(regions))
    if max_per_region >= 0:
        if len(regions) * max_per_region < expected_total:
            raise FlyError("the number of regions by the maximum machines per region is fewer than the expected total")
        for r in regions:
            c = current.get(r, 0)
            if c > max_per_region:
                diffs[r] = max_per_region - c
    diff = expected_total
    for r in regions:
        diff -= current.get(r, 0) + diffs.get(r, 0)
    idx = 0
    while diff > 0:
        r = regions[idx % len(regions)]
        if max_per_region < 0 or current.get(r, 0) + diffs.get(r, 0) < max_per_region:
            diffs[r] = diffs.get(r, 0) + 1
            diff -= 1
        idx += 1
    idx = -1
    while diff < 0:
        r = regions[(-idx) % len(regions)]
        if current.get(r, 0) + diffs.get(r, 0) > 0:
            diffs[r] = diffs.get(r, 0) - 1
            diff += 1
        idx -= 1
    return diffs


@handler("scale count")
def scale_count(home, opts, args):
    """scale/count.go runScaleCount + count_machines.go runMachinesScaleCount / computeActions.

    Machines counted: every Fly Launch machine of the group (flaps ListFlyAppsMachines: v2,
    not destroyed, not the release command), standbys and stopped ones included. New machines
    clone the group's first machine's config with `standbys` and FLY_STANDBY_FOR removed
    ("no point on having more than one"). With mounts each new machine takes an unattached
    volume of that name in its region (machine_defaults.go PopAvailableVolumes, skipped with
    --with-new-volumes) or else gets a NEW volume (CreateVolumeRequest; require_unique_zone
    when the region will hold more than one machine)."""
    if not args:
        raise FlyError("requires at least 1 arg(s), only received 0", usage=True)
    name = app_name(opts)
    group_default = opts.get("process-group") or "app"
    wanted: dict[str, tuple[str, int]] = {}  # group -> (mode, n)  mode: abs|rel   (parseGroupCounts)
    if len(args) == 1 and re.fullmatch(r"[+-]?\d+", args[0]):
        a = args[0]
        if a[0] in "+-":
            if int(a) == 0:
                raise FlyError(f"invalid relative scale count: {a}")
            wanted[group_default] = ("rel", int(a))
        else:
            wanted[group_default] = ("abs", int(a))
    else:
        for a in args:
            m = re.fullmatch(r"([^=]+)=([+-]?\d+)", a)
            if not m:
                raise FlyError(f"'{a}' is not a valid process=count option")
            wanted[m.group(1)] = ("rel", int(m.group(2))) if m.group(2)[0] in "+-" else ("abs", int(m.group(2)))
    regions_flag = [r for r in (opts.get("region") or "").split(",") if r]
    maxper = opts.get("max-per-region")
    if maxper is None:
        maxper = -1
    with S.mutate(home) as st:
        app = get_app(st, name)
        cfg = app.get("config") or {"app": name}
        valid = M.process_groups(cfg)
        unknown = [g for g in wanted if g not in valid]
        if unknown:
            raise FlyError(f"Attempting to scale unknown process groups [{' '.join(unknown)}] but valid names are [{' '.join(valid)}].\n"
                           " Use `fly scale count COUNT --process-group=NAME` \n"
                           " or multi group syntax `fly scale count NAME1=COUNT1 NAME2=COUNT2 ...`")
        complete = [r for r in app["releases"] if r["status"] == "complete"]
        if not complete:
            raise FlyError("this app has no complete releases. Run `fly deploy` to create one and rerun this command")
        rel = complete[-1]
        v2 = [m for m in app["machines"] if M.is_v2(m) and M.is_active(m)]
        regions = regions_flag or list(dict.fromkeys(m["region"] for m in v2)) or [cfg.get("primary_region") or "iad"]
        unattached: dict[tuple[str, str], list[dict]] = {}
        if not opts.get("with-new-volumes"):
            for v in app["volumes"]:
                if v["state"] == "created" and not v["attached_machine_id"] and v.get("host_status", "ok") == "ok":
                    unattached.setdefault((v["name"], v["region"]), []).append(v)
        volsize = {}
        for v in app["volumes"]:
            volsize[v["name"]] = max(volsize.get(v["name"], 0), v["size_gb"])
        plan = []  # (group, region, delta, machines in region, template config, reuse volumes, creates volumes)
        for group in sorted(wanted):
            mode, n = wanted[group]
            gm = [m for m in v2 if M.group_of(m) == group]
            expected = max(n if mode == "abs" else len(gm) + n, 0)
            per = {}
            for m in gm:
                per.setdefault(m["region"], []).append(m)
            diffs = converge_group_counts(expected, {r: len(x) for r, x in per.items()}, regions, maxper)
            if gm:
                template = copy.deepcopy(gm[0]["config"])
                template.pop("standbys", None)                       # computeActions: nullify standbys
                template.get("env", {}).pop("FLY_STANDBY_FOR", None)
                secrets = gm[0].get("_secrets", M.secrets_snapshot(app))
            else:                                                   # defaults.ToMachineConfig
                template = M.machine_config(cfg, group, image=rel.get("image_ref") or app.get("image", ""), release=rel,
                                            region=regions[0], vm_size=opts.get("vm-size"))
                mount = M.mount_for(cfg, group)
                if mount:
                    template["mounts"] = [{"volume": "", "path": mount.get("destination", "/data"), "name": mount.get("source"),
                                           "size_gb": volsize.get(mount.get("source"), 1), "encrypted": True}]
                secrets = M.secrets_snapshot(app)
            for r in regions:
                delta = diffs.get(r, 0)
                if not delta:
                    continue
                reuse, creates = [], 0
                mounts = template.get("mounts") or []
                if delta > 0 and mounts:
                    pool = unattached.get((mounts[0]["name"], r), [])
                    reuse = pool[:delta]
                    unattached[(mounts[0]["name"], r)] = pool[len(reuse):]
                    creates = delta - len(reuse)
                plan.append((group, r, delta, per.get(r, []), template, reuse, creates, secrets))
        if not plan:
            out("App already scaled to desired state. No need for changes")
            return 0
        lines = [f"App '{name}' is going to be scaled according to this plan:"]
        for group, r, delta, ms, template, reuse, creates, _ in plan:
            size = M.size_name((template if delta > 0 else (ms[0]["config"] if ms else template)).get("guest") or {})
            lines.append(f"{delta:+4d} machines for group '{group}' on region '{r}' of size '{size}'")
            if reuse and creates:
                lines.append(f"{creates:+4d} volumes and {len(reuse)} unattached volumes assigned to group '{group}' in region '{r}'")
            elif reuse:
                lines.append(f"{len(reuse):4d} unattached volumes to be assigned to group '{group}' in region '{r}'")
            elif creates:
                lines.append(f"{creates:+4d} volumes  for group '{group}' in region '{r}'")
        if not opts.get("yes"):
            for line in lines:
                out(line)
            yes_required(opts, "--yes flag must be specified when not running interactively")
        executed = []
        healthy = health_ok(name)
        for group, r, delta, ms, template, reuse, _creates, secrets in plan:
            _, names = M.checks_from_config(cfg, group)
            for i in range(max(delta, 0)):                          # launchMachine
                conf = copy.deepcopy(template)
                conf.setdefault("env", {}).update(kv_pairs(opts.get("env"), "env"))
                vol = None
                if conf.get("mounts"):
                    mnt = conf["mounts"][0]
                    if i < len(reuse):
                        vol = reuse[i]
                    else:
                        size = mnt.get("size_gb") or volsize.get(mnt["name"], 1)
                        executed.append(f"  Creating volume {mnt['name']} region:{r} size:{size}GiB")
                        vol = M.new_volume(app, name=mnt["name"], region=r, size=size,
                                           unique_zone=len(ms) + delta > 1)
                    mnt["volume"] = vol["id"]
                    mnt["size_gb"] = vol["size_gb"]
                m = M.make_machine(app, config=conf, region=r, check_names=names, healthy=healthy, secrets=secrets)
                if vol:
                    vol["attached_machine_id"] = m["id"]
                    vol["attached_alloc_id"] = m["id"]
                executed.append(f"  Created {m['id']} group:{group} region:{r} size:{M.size_name(conf.get('guest', {}))}"
                                + (f" volume:{vol['id']}" if vol else ""))
            for i in range(-min(delta, 0)):                         # destroyMachine: Machines[0], [1], ... of the region
                m = ms[i]
                app["machines"].remove(m)
                for v in app["volumes"]:
                    if v["attached_machine_id"] == m["id"]:
                        v["attached_machine_id"] = None
                        v["attached_alloc_id"] = None
                executed.append(f"  Destroyed {m['id']} group:{group} region:{r} size:{M.size_name(m['config'].get('guest', {}))}")
        record_event(home, {"type": "scale", "app": name,
                            "plan": [[g, r, max(d, 0), max(-d, 0)] for g, r, d, *_ in plan]})
    if opts.get("yes"):
        for line in lines:
            out(line)
    out("Executing scale plan")
    for line in executed:
        out(line)
    return 0


# ------------------------------------------------------------------ config validate

KNOWN_TOP = {"app", "primary_region", "kill_signal", "kill_timeout", "swap_size_mb", "console_command",
             "host_dedication_id", "machine_config", "container", "experimental", "build", "deploy", "env",
             "processes", "mounts", "mount", "http_service", "services", "checks", "files", "machine_checks",
             "restart", "vm", "compute", "statics", "metrics"}


@handler("config validate")
def config_validate(home, opts, args):
    nargs(args, 0, 0)
    cfg, path = load_config(opts)
    name = opts.get("app") or os.environ.get("FLY_APP") or (cfg or {}).get("app")
    if not name:
        raise FlyError("the config for your app is missing an app name, add an app field to the fly.toml file or specify with the -a flag")
    if cfg is None:
        st = S.load(home)
        app = get_app(st, name)
        cfg = app.get("config") or {"app": name}
        if opts.get("strict"):
            raise FlyError("failed to load config for strict validation: open : no such file or directory")
    out(f"Validating {path or ''}")
    reasons = validate_config(cfg)
    for r in reasons:
        out(r)
    if reasons:
        out()
        out("   ✘invalid app configuration")
        out()
        raise FlyError("App configuration is not valid")
    if opts.get("strict"):
        unknown = [k for k in cfg if k not in KNOWN_TOP]
        if unknown:
            out("Strict validation found unrecognised sections or keys:")
            for k in unknown:
                out(f"  - {k}")
            out()
            out()
            raise FlyError("strict validation failed")
    out("✓ Configuration is valid")
    out()
    return 0


# ------------------------------------------------------------------ tokens (fakefly/tokens.py)


@handler("tokens create deploy", "tokens deploy")
def tokens_create_deploy(home, opts, args):
    from .tokens import cmd_tokens_create

    return cmd_tokens_create(home, opts, args, "app")


@handler("tokens create org")
def tokens_create_org(home, opts, args):
    from .tokens import cmd_tokens_create

    return cmd_tokens_create(home, opts, args, "org")


# ------------------------------------------------------------------ storage (fakefly/storage.py)

from . import mpg as _mpg  # noqa: E402,F401  (registers `mpg *`: fakefly/mpg.py)
from . import pgbackup as _pgbackup  # noqa: E402,F401 - registers `postgres backup ...` (fakefly/pgbackup.py)
from . import storage  # noqa: E402,F401  registers `storage create|list|destroy`
