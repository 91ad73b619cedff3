"""`inv status`: one row per app of the environment, from flyctl JSON read concurrently.

Per app: state and release (`status --json`), the image its machines run, machines per
region with their states and checks (`status --json` machines), volumes per region
(`volumes list --json`, stores and the database), secrets staged but not deployed
(`secrets list --json` status Staged / Partial), and the deploy lock's holder.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

from flyops.fly.flyctl import commands as fly
from flyops.fly.flyctl.output import GONE_VOLUME_STATES
from flyops.fly.flyctl.runner import FlyRunner, parallel
from flyops.fly.lock import Holder, holder
from flyops.fly.waves import current_image, kind_of
from flyops.stack.model import Stack


@dataclass
class RegionMachines:
    total: int = 0
    started: int = 0
    checks_passing: int = 0
    checks_total: int = 0

    def text(self) -> str:
        out = f"{self.started}/{self.total} started"
        if self.checks_total:
            out += f", checks {self.checks_passing}/{self.checks_total}"
        return out


@dataclass
class AppStatus:
    component: str
    app: str
    kind: str
    exists: bool
    state: str = ""
    release: int | None = None
    image: str = ""
    machines: dict[str, RegionMachines] = field(default_factory=dict)
    volumes: dict[str, list[str]] = field(default_factory=dict)  # region -> ["name 1GB", ...]
    secrets_staged: list[str] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        """Every region of its placement has a machine and no check fails. A stopped machine
        (autostop) is not a problem; a region with none is."""
        return self.exists and all(r.total > 0 and r.checks_passing == r.checks_total
                                   for r in self.machines.values()) and bool(self.machines)


@dataclass
class EnvStatus:
    env: str
    apps: list[AppStatus]
    lock: Holder | None
    #: source = "mpg": the Managed Postgres cluster (`mpg list --json`: id, name, status, plan,
    #: region, disk, attached apps), {"name": ..., "status": "missing"} if there is none
    database: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        out = {"env": self.env, "lock": self.lock.as_dict() if self.lock else None,
               "apps": [{**asdict(a), "healthy": a.healthy} for a in self.apps]}
        if self.database is not None:
            out["database"] = self.database
        return out


def mpg_summary(stack: Stack, clusters: list[dict[str, Any]]) -> dict[str, Any]:
    from flyops.fly import mpg
    from flyops.stack.model import COMPONENT_DB

    name = stack.app_name(COMPONENT_DB)
    c = mpg.pick(clusters, name, stack.project.org)
    if c is None:
        return {"product": "mpg", "name": name, "status": "missing"}
    return {"product": "mpg", "name": name, "id": c.get("id"), "status": c.get("status"), "plan": c.get("plan"),
            "region": c.get("region"), "disk_gb": c.get("disk"),
            "attached_apps": sorted(a.get("name", "") for a in c.get("attached_apps") or [])}


def machines_by_region(status: dict[str, Any]) -> dict[str, RegionMachines]:
    out: dict[str, RegionMachines] = defaultdict(RegionMachines)
    for m in status.get("Machines") or []:
        r = out[m.get("region", "?")]
        r.total += 1
        r.started += m.get("state") == "started"
        checks = (m.get("checks") or []) if m.get("state") == "started" else []  # a stopped machine's are not run
        r.checks_total += len(checks)
        r.checks_passing += sum(1 for c in checks if c.get("status") == "passing")
    return dict(sorted(out.items()))


def volumes_by_region(volumes: list[dict[str, Any]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = defaultdict(list)
    for v in volumes:
        if v.get("state") in GONE_VOLUME_STATES:
            continue
        attached = "" if v.get("attached_machine_id") else " unattached"
        out[v.get("region", "?")].append(f"{v.get('name')} {v.get('size_gb')}GB{attached}")
    return dict(sorted(out.items()))


def read_status(stack: Stack, runner: FlyRunner) -> EnvStatus:
    stack.require_fly()
    names = {a.get("Name") for a in runner.json(fly.apps_list(stack.project.org)) or []}
    comps = stack.components()
    reads: dict[tuple[str, str], Any] = {}
    for c in comps:
        if c.app not in names:
            continue
        reads[("status", c.name)] = lambda a=c.app: runner.json(fly.status(a))
        reads[("secrets", c.name)] = lambda a=c.app: runner.json(fly.secrets_list(a))
        if c.kind in ("store", "database"):
            reads[("volumes", c.name)] = lambda a=c.app: runner.json(fly.volumes_list(a))
    reads[("lock", "")] = lambda: holder(stack, runner)
    if stack.database.source == "mpg":
        from flyops.fly import mpg

        reads[("mpg", "")] = lambda: runner.json(mpg.list_clusters(stack.project.org)) or []
    got = parallel(reads)
    apps = []
    for c in comps:
        if c.app not in names:
            apps.append(AppStatus(c.name, c.app, kind_of(stack, c.name), exists=False, state="missing"))
            continue
        st = got[("status", c.name)] or {}
        staged = [s["name"] for s in got[("secrets", c.name)] or [] if s.get("status") in ("Staged", "Partial")]
        apps.append(AppStatus(
            c.name, c.app, kind_of(stack, c.name), exists=True,
            state=st.get("Status", ""), release=st.get("Version") or None, image=current_image(st),
            machines=dict(sorted({**{r: RegionMachines() for r in stack.placement(c.name)}, **machines_by_region(st)}.items())),
            volumes=volumes_by_region(got.get(("volumes", c.name)) or []),
            secrets_staged=sorted(staged),
        ))
    database = mpg_summary(stack, got[("mpg", "")]) if ("mpg", "") in got else None
    return EnvStatus(stack.env, apps, got[("lock", "")], database)


def rows(status: EnvStatus) -> list[tuple[str, ...]]:
    out = []
    for a in status.apps:
        out.append((
            a.component, a.app, a.state, f"v{a.release}" if a.release else "-",
            a.image.split("/")[-1] if a.image else "-",
            "\n".join(f"{r}: {m.text()}" for r, m in a.machines.items()) or "-",
            "\n".join(f"{r}: {', '.join(v)}" for r, v in a.volumes.items()) or "-",
            ", ".join(a.secrets_staged) or "-",
        ))
    return out


def database_line(status: EnvStatus) -> str | None:
    d = status.database
    if d is None:
        return None
    if d["status"] == "missing":
        return f"database: Managed Postgres {d['name']}: missing (inv up --env {status.env} creates it)"
    return (f"database: Managed Postgres {d['name']} ({d['id']}): {d['status']}, {d['plan']}, {d['region']}, "
            f"{d['disk_gb']} GB; attached to {', '.join(d['attached_apps']) or 'no app'}")


COLUMNS = ["component", "app", "state", "release", "image", "machines (region: started, checks)", "volumes", "secrets staged"]
