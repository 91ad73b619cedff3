"""JSON shapes (fly.App, fly.Release, fly.Machine, fly.Volume) and platform helpers."""

from __future__ import annotations

import copy
import hashlib
import json
import random
import shlex

from . import FLYCTL_VERSION
from . import state as S

ADJ = ["red", "blue", "quiet", "bold", "young", "ancient", "calm", "lively", "snowy", "falling"]
NOUN = ["river", "forest", "sun", "moon", "hill", "lake", "star", "field", "cloud", "shadow"]


def dumps(obj) -> str:
    """encoding/json with 4-space indent and a trailing newline (Go escapes <, >, &)."""
    text = json.dumps(obj, indent=4, ensure_ascii=False)
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return text + "\n"


def machine_name() -> str:
    return f"{random.choice(ADJ)}-{random.choice(NOUN)}-{random.randint(1000, 9999)}"


# ------------------------------------------------------------------ orgs / apps


def org_full(st: dict, slug: str) -> dict:
    o = st["orgs"].get(slug, {})
    return {
        "ID": o.get("id", ""),
        "InternalNumericID": o.get("internal_numeric_id", ""),
        "Name": o.get("name", ""),
        "RemoteBuilderImage": "",
        "RemoteBuilderApp": None,
        "Slug": slug,
        "RawSlug": slug,
        "Type": o.get("type", ""),
        "PaidPlan": o.get("paid_plan", False),
        "Billable": False,
        "Settings": None,
        "AllowedReplaySourceOrgSlugs": None,
        "AllowAllCrossNetworkReplays": False,
        "WireGuardPeer": None,
        "WireGuardPeers": {"Nodes": None},
        "DelegatedWireGuardTokens": {"Nodes": None},
        "LoggedCertificates": None,
    }


def image_details_zero() -> dict:
    return {"Registry": "", "Repository": "", "Tag": "", "Version": "", "Digest": ""}


def app_json(st: dict, app: dict, *, full: bool = True) -> dict:
    """fly.App with every key present. full=False mimics `apps list` (fewer fields filled)."""
    cur = app["releases"][-1] if app["releases"] else None
    current = None
    if cur:
        current = release_json(cur, app) if full else {**release_zero(), "CreatedAt": cur["created_at"], "Status": cur["status"]}
    org = org_full(st, app["org"])
    if not full:
        org = {**{k: (None if isinstance(v, dict) and k not in ("WireGuardPeers", "DelegatedWireGuardTokens") else v) for k, v in org_full(st, "").items()},
               "Slug": app["org"], "Name": st["orgs"].get(app["org"], {}).get("name", "")}
        org["ID"] = ""
        org["InternalNumericID"] = ""
        org["RawSlug"] = ""
        org["Type"] = ""
        org["WireGuardPeers"] = {"Nodes": None}
        org["DelegatedWireGuardTokens"] = {"Nodes": None}
    return {
        "ID": app["id"],
        "InternalNumericID": app["internal_numeric_id"] if full else 0,
        "Name": app["name"],
        "State": "",
        "Status": app["status"],
        "Deployed": app["deployed"],
        "Hostname": f"{app['name']}.fly.dev",
        "AppURL": f"https://{app['name']}.fly.dev" if full else "",
        "Version": (cur["version"] if cur else 0) if full else 0,
        "NetworkID": 0,
        "Network": app.get("network") or "default",
        "Release": None,
        "Organization": org,
        "Secrets": None,
        "CurrentRelease": current,
        "Releases": {"Nodes": None},
        "IPAddresses": {"Nodes": None},
        "EgressIpAddresses": {"Nodes": None},
        "SharedIPAddress": "",
        "CNAMETarget": "",
        "IPAddress": None,
        "Certificates": {"Nodes": None},
        "Certificate": None,
        "PostgresAppRole": {"Name": app["postgres_role"]} if app.get("postgres_role") and full else None,
        "Image": "",
        "ImageUpgradeAvailable": False,
        "ImageVersionTrackingEnabled": False,
        "ImageDetails": image_details_zero(),
        "LatestImageDetails": image_details_zero(),
        "PlatformVersion": app.get("platform_version", "machines"),
        "Machines": {"Nodes": None},
        "CurrentLock": None,
    }


def release_zero() -> dict:
    return {
        "ID": "", "Version": 0, "Stable": False, "InProgress": False, "Reason": "",
        "Description": "", "Status": "", "DeploymentStrategy": "", "Metadata": None,
        "User": {"ID": "", "Name": "", "Email": "", "EnablePaidHobby": False},
        "EvaluationID": "", "CreatedAt": "0001-01-01T00:00:00Z", "ImageRef": "",
    }


USER = {"ID": "usr_fakefly", "Name": "Fake Fly", "Email": "fakefly@example.com", "EnablePaidHobby": False}


def release_json(rel: dict, app: dict) -> dict:
    return {
        **release_zero(),
        "ID": rel["id"],
        "Version": rel["version"],
        "Stable": rel["status"] == "complete",
        "Reason": rel["reason"],
        "Description": rel["description"],
        "Status": rel["status"],
        "User": dict(USER),
        "CreatedAt": rel["created_at"][:19] + "Z",
        "ImageRef": rel.get("image_ref", ""),
    }


def new_release(app: dict, *, image: str, reason: str, description: str, status: str, strategy: str = "") -> dict:
    rel = {
        "id": S.short_id(10),
        "version": (app["releases"][-1]["version"] if app["releases"] else 0) + 1,
        "status": status,
        "reason": reason,
        "description": description,
        "image_ref": image,
        "strategy": strategy,
        "created_at": S.rfc3339_precise(),
    }
    app["releases"].append(rel)
    return rel


# ------------------------------------------------------------------ images


def image_ref(ref: str) -> dict:
    """Split an image reference into fly.MachineImageRef."""
    name, digest = ref, ""
    if "@" in name:
        name, digest = name.split("@", 1)
    tag = "latest"
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        name, tag = name.rsplit(":", 1)
    first = name.split("/", 1)[0]
    if "/" in name and ("." in first or ":" in first or first == "localhost"):
        registry, repo = name.split("/", 1)
    else:
        registry = "docker-hub-mirror.fly.io"
        repo = name if "/" in name else f"library/{name}"
    if not digest:
        digest = "sha256:" + hashlib.sha256(ref.encode()).hexdigest()
    return {"registry": registry, "repository": repo, "tag": tag, "digest": digest, "labels": None}


# ------------------------------------------------------------------ machines


def parse_memory_mb(text) -> int:
    if isinstance(text, int):
        return text
    t = str(text).strip().lower()
    for suf, mul in (("gb", 1024), ("g", 1024), ("mb", 1), ("m", 1)):
        if t.endswith(suf):
            return int(float(t[: -len(suf)]) * mul)
    return int(t)


def guest_from(size: str | None = None, vm: dict | None = None) -> dict:
    kind, cpus, mem = "shared", 1, 256
    size = size or (vm or {}).get("size")
    if size:
        parts = size.split("-")
        if size.startswith("performance"):
            kind, cpus = "performance", int(parts[-1].rstrip("x"))
            mem = 2048 * cpus
        elif size.startswith("shared"):
            cpus = int(parts[-1].rstrip("x"))
            mem = 256 * cpus
    vm = vm or {}
    if vm.get("cpu_kind"):
        kind = vm["cpu_kind"]
    if vm.get("cpus"):
        cpus = int(vm["cpus"])
    if vm.get("memory"):
        mem = parse_memory_mb(vm["memory"])
    if vm.get("memory_mb"):
        mem = int(vm["memory_mb"])
    return {"cpu_kind": kind, "cpus": cpus, "memory_mb": mem}


def size_name(guest: dict) -> str:
    if guest.get("cpu_kind") == "performance":
        return f"performance-{guest.get('cpus', 1)}x"
    return f"shared-cpu-{guest.get('cpus', 1)}x"


def checks_from_config(cfg: dict, group: str) -> tuple[dict, list[str]]:
    """Machine config checks and the list of check names a machine reports."""
    checks: dict = {}
    names: list[str] = []
    for name, spec in (cfg.get("checks") or {}).items():
        procs = spec.get("processes") or []
        if procs and group not in procs:
            continue
        checks[name] = {k: v for k, v in spec.items() if k != "processes"}
        names.append(name)
    hs = cfg.get("http_service") or {}
    if hs and (not hs.get("processes") or group in hs.get("processes", [])):
        for i, c in enumerate(hs.get("checks") or []):
            names.append(f"servicecheck-{i:02d}-{c.get('protocol', 'http')}-{hs.get('internal_port', 8080)}")
    for svc in cfg.get("services") or []:
        if svc.get("processes") and group not in svc["processes"]:
            continue
        for kind in ("http_checks", "tcp_checks"):
            for i, _check in enumerate(svc.get(kind) or []):
                names.append(f"servicecheck-{i:02d}-{kind[:-7]}-{svc.get('internal_port', 0)}")
    return checks, names


def services_from_config(cfg: dict, group: str) -> list:
    out = []
    hs = cfg.get("http_service")
    if hs and (not hs.get("processes") or group in hs["processes"]):
        out.append({
            "protocol": "tcp",
            "internal_port": hs.get("internal_port", 8080),
            "autostop": hs.get("auto_stop_machines", "off"),
            "autostart": hs.get("auto_start_machines", True),
            "min_machines_running": hs.get("min_machines_running", 0),
            "ports": [
                {"port": 80, "handlers": ["http"], "force_https": hs.get("force_https", False)},
                {"port": 443, "handlers": ["http", "tls"]},
            ],
            "force_instance_key": None,
        })
    for svc in cfg.get("services") or []:
        if svc.get("processes") and group not in svc["processes"]:
            continue
        out.append({
            "protocol": svc.get("protocol", "tcp"),
            "internal_port": svc.get("internal_port", 0),
            "ports": [dict(p) for p in svc.get("ports", [])],
            "force_instance_key": None,
        })
    return out


def process_groups(cfg: dict) -> list[str]:
    procs = cfg.get("processes") or {}
    return sorted(procs) if procs else ["app"]


def mount_for(cfg: dict, group: str) -> dict | None:
    mounts = cfg.get("mounts") or []
    if isinstance(mounts, dict):
        mounts = [mounts]
    for m in mounts:
        if not m.get("processes") or group in m["processes"]:
            return m
    return None


def vm_for(cfg: dict, group: str) -> dict | None:
    vms = cfg.get("vm") or []
    if isinstance(vms, dict):
        vms = [vms]
    for v in vms:
        if not v.get("processes") or group in v["processes"]:
            return v
    return None


def machine_config(cfg: dict, group: str, *, image: str, release: dict | None, region: str,
                   extra_env: dict | None = None, vm_size: str | None = None) -> dict:
    env = {str(k): str(v) for k, v in (cfg.get("env") or {}).items()}
    env.update(extra_env or {})
    env["FLY_PROCESS_GROUP"] = group
    env["PRIMARY_REGION"] = cfg.get("primary_region") or region
    init: dict = {}
    procs = cfg.get("processes") or {}
    if procs.get(group):
        init["cmd"] = shlex.split(procs[group])
    checks, _ = checks_from_config(cfg, group)
    conf = {
        "env": env,
        "init": init,
        "guest": guest_from(vm_size, vm_for(cfg, group)),
        "metadata": {
            "fly_flyctl_version": FLYCTL_VERSION,
            "fly_platform_version": "v2",
            "fly_process_group": group,
        },
        "image": image,
        "restart": {"policy": "on-failure", "max_retries": 10},
    }
    if release:
        conf["metadata"]["fly_release_id"] = release["id"]
        conf["metadata"]["fly_release_version"] = str(release["version"])
    services = services_from_config(cfg, group)
    if services:
        conf["services"] = services
    if checks:
        conf["checks"] = checks
    return conf


def make_machine(app: dict, *, config: dict, region: str, state: str = "started",
                 check_names: list[str] | None = None, healthy: bool = True,
                 secrets: dict | None = None, name: str | None = None) -> dict:
    t = S.rfc3339()
    ms = int(S.now().timestamp() * 1000)
    m = {
        "id": S.machine_id(),
        "name": name or machine_name(),
        "state": state,
        "region": region,
        "image_ref": image_ref(config.get("image", "")),
        "instance_id": S.ulid(),
        "version": S.ulid(),
        "private_ip": S.private_ip(),
        "created_at": t,
        "updated_at": t,
        "config": config,
        "events": [
            {"type": "launch", "status": "created", "source": "user", "timestamp": ms},
            {"type": "start", "status": "started", "source": "flyd", "timestamp": ms + 1},
        ],
        "host_status": "ok",
        "cordoned": False,
        "_secrets": dict(secrets or {}),
    }
    if state != "started":
        m["events"] = m["events"][:1]
    set_checks(m, check_names or [], healthy)
    app["machines"].append(m)
    return m


def set_checks(m: dict, names: list[str], healthy: bool) -> None:
    if not names:
        m.pop("checks", None)
        return
    m["checks"] = [
        {"name": n, "status": "passing" if healthy else "critical",
         "output": "OK" if healthy else "connect: connection refused", "updated_at": S.rfc3339()}
        for n in names
    ]


def secrets_snapshot(app: dict) -> dict:
    return {k: v["value"] for k, v in app["secrets"].items()}


def machine_json(m: dict) -> dict:
    out = S.strip_internal(copy.deepcopy(m))
    return out


def is_v2(m: dict) -> bool:
    return (m.get("config") or {}).get("metadata", {}).get("fly_platform_version") == "v2"


def is_active(m: dict) -> bool:
    meta = (m.get("config") or {}).get("metadata", {})
    if meta.get("process_group") == "fly_app_release_command" or meta.get("fly_process_group") == "fly_app_release_command":
        return False
    return m["state"] not in ("destroyed", "destroying")


def group_of(m: dict) -> str:
    return (m.get("config") or {}).get("metadata", {}).get("fly_process_group") or "app"


# ------------------------------------------------------------------ volumes


ZONES = [f"{i:04x}" for i in range(0x1a2b, 0x1a2b + 16)]


def new_volume(app: dict, *, name: str, region: str, size: int, unique_zone: bool = True,
               app_wide: bool = False, encrypted: bool = True, retention: int = 5,
               auto_backup: bool = True) -> dict:
    used = {
        v["zone"] for v in app["volumes"]
        if v["region"] == region and v["state"] == "created" and (app_wide or v["name"] == name)
    }
    choices = [z for z in ZONES if z not in used] if unique_zone else list(ZONES)
    if not choices:
        from .cli import FlyError
        raise FlyError("failed to create volume: no capacity available for a unique zone in region " + region)
    v = {
        "id": S.volume_id(),
        "name": name,
        "state": "created",
        "size_gb": int(size),
        "region": region,
        "zone": choices[0] if unique_zone else random.choice(choices),
        "encrypted": encrypted,
        "attached_machine_id": None,
        "attached_alloc_id": None,
        "created_at": S.rfc3339(),
        "host_dedication_id": "",
        "snapshot_retention": retention,
        "auto_backup_enabled": auto_backup,
    }
    app["volumes"].append(v)
    return v


def volume_json(v: dict) -> dict:
    out = S.strip_internal(dict(v))
    if not out.get("host_status"):
        out.pop("host_status", None)
    return out


HIDDEN_VOLUME_STATES = {"scheduling_destroy", "fork_cleanup", "waiting_for_detach", "pending_destroy", "destroying"}
