"""Desired (the stack) against live (flyctl JSON): one row per app, volume and secret.

`read_live(stack, runner)` makes every read concurrently once the app list is known, so
the wall time is about two flyctl calls whatever the number of apps. `plan(stack, live)`
is a pure function from both to rows with an action: create / deploy / change / keep / remove.
An app that exists but was never deployed (created by a `up` that stopped before its deploy,
`Deployed: false` in `fly apps list --json`, fly-go's App.Deployed) is pending too: `deploy`.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from flyops.fly.flyctl import commands as fly
from flyops.fly.flyctl.output import GONE_VOLUME_STATES
from flyops.fly.flyctl.runner import FlyRunner, parallel
from flyops.stack.model import COMPONENT_DB, Stack
from flyops.stack.wanted import wanted_names

Action = Literal["create", "deploy", "change", "keep", "remove"]


@dataclass(frozen=True)
class Row:
    kind: Literal["app", "volume", "secret", "machine", "database", "backups"]
    component: str
    app: str
    target: str  # app name, region, or secret name
    action: Action
    detail: str = ""


@dataclass
class Live:
    """What flyctl reported. Absent apps have no entries in the per-app maps."""

    apps: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> fly.App JSON
    volumes: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # app -> fly.Volume JSON
    secrets: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # app -> [{name, digest, status}]
    machines: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # app -> `status --json` Machines
    mpg: list[dict[str, Any]] = field(default_factory=list)  # `mpg list --json`: the org's Managed Postgres clusters
    backups: Any = None  # flyops.fly.pgbackup.LiveBackups of the cluster (database.pitr), else None



def read_live(stack: Stack, runner: FlyRunner) -> Live:
    stack.require_fly()
    apps = runner.json(fly.apps_list(stack.project.org)) or []
    live = Live(apps={a["Name"]: a for a in apps})
    reads: dict[tuple[str, str], Callable[[], Any]] = {}
    for comp in stack.components():
        if comp.app not in live.apps:
            continue
        if comp.kind == "database":  # its secrets belong to flyctl's Postgres tooling
            reads[("volumes", comp.app)] = lambda app=comp.app: runner.json(fly.volumes_list(app))
            continue
        reads[("secrets", comp.app)] = lambda app=comp.app: runner.json(fly.secrets_list(app))
        if comp.kind in ("store", "database"):
            reads[("volumes", comp.app)] = lambda app=comp.app: runner.json(fly.volumes_list(app))
        if live.apps[comp.app].get("Deployed"):
            reads[("machines", comp.app)] = lambda app=comp.app: (runner.json(fly.status(app)) or {}).get("Machines")
    if stack.database.source == "mpg":
        from flyops.fly import mpg

        reads[("mpg", "")] = lambda: runner.json(mpg.list_clusters(stack.project.org))
    for (kind, app), value in parallel(reads).items():
        if kind == "mpg":
            live.mpg = value or []
            continue
        getattr(live, kind)[app] = value or []
    if stack.database.source == "fly" and stack.database.pitr and stack.app_name(COMPONENT_DB) in live.apps:
        from flyops.fly.pgbackup import read_live_backups

        live.backups = read_live_backups(stack, runner)
    return live


def live_volumes(volumes: list[dict[str, Any]], name: str) -> dict[str, list[dict[str, Any]]]:
    """Healthy volumes called `name`, by region."""
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for v in volumes:
        if v.get("name") == name and v.get("state") not in GONE_VOLUME_STATES:
            out[v["region"]].append(v)
    return out


def plan_apps(stack: Stack, live: Live) -> list[Row]:
    rows = []
    for comp in stack.components():
        exists = comp.app in live.apps
        how = "fly postgres create" if comp.name == COMPONENT_DB else "fly apps create"
        if exists and comp.kind != "database" and not live.apps[comp.app].get("Deployed"):
            # the database is flyctl's: `fly postgres create` starts its machines itself
            rows.append(Row("app", comp.name, comp.app, comp.app, "deploy", "created, never deployed: inv deploy"))
            continue
        rows.append(Row("app", comp.name, comp.app, comp.app, "keep" if exists else "create", "" if exists else how))
    ours = {c.app for c in stack.components()}
    prefix = stack.project.app_name.format(project=stack.project.name, env=stack.env, component="")
    for name in sorted(live.apps):
        if prefix and name.startswith(prefix) and name not in ours:
            rows.append(Row("app", "?", name, name, "remove", "named like this environment but not in the stack"))
    return rows


def plan_volumes(stack: Stack, live: Live, only_store: str | None = None) -> list[Row]:
    """One volume named as in the stack per store per region, at least the stack's size."""
    rows = []
    for name, store in stack.stores.items():
        if only_store and name != only_store:
            continue
        app = stack.app_name(name)
        by_region = live_volumes(live.volumes.get(app, []), store.volume)
        placed = stack.placement(name)  # the store's regions (stores.<name>.placement)
        for region in placed:
            have = by_region.get(region, [])
            if not have:
                rows.append(Row("volume", name, app, region, "create", f"{store.volume} {store.volume_size_gb} GB"))
                continue
            small = [v for v in have if int(v.get("size_gb", 0)) < store.volume_size_gb]
            if small:
                sizes = ", ".join(f"{v['id']} {v['size_gb']} GB" for v in small)
                rows.append(Row("volume", name, app, region, "change", f"extend {sizes} to {store.volume_size_gb} GB"))
            else:
                bigger = [v for v in have if int(v.get("size_gb", 0)) > store.volume_size_gb]
                note = f"{store.volume} {have[0]['size_gb']} GB"
                if bigger:
                    note += f" (larger than the stack's {store.volume_size_gb} GB; volumes are never shrunk)"
                rows.append(Row("volume", name, app, region, "keep", note))
            if len(have) > 1:
                ids = ", ".join(v["id"] for v in have[1:])
                rows.append(Row("volume", name, app, region, "remove", f"{len(have) - 1} extra {store.volume}: {ids}"))
        for region, vols in sorted(by_region.items()):
            if region not in placed:
                ids = ", ".join(v["id"] for v in vols)
                rows.append(Row("volume", name, app, region, "remove", f"region not in the stack: {ids}"))
    return rows


def plan_secret_names(stack: Stack, live: Live) -> list[Row]:
    """By name only: flyctl never returns values (see `inv secrets.diff` for changes)."""
    rows = []
    for component, names in wanted_names(stack).items():
        if component == COMPONENT_DB:  # flyctl's Postgres tooling owns the cluster's own secrets
            continue
        app = stack.app_name(component)
        have = {s["name"] for s in live.secrets.get(app, [])}
        for name in sorted(names):
            rows.append(Row("secret", component, app, name, "keep" if name in have else "create"))
        for name in sorted(have - names):
            rows.append(Row("secret", component, app, name, "remove", "not wanted by the stack"))
    return rows


def plan_machines(stack: Stack, live: Live) -> list[Row]:
    """Machines per component and region against the stack's placement (flyops.fly.placement)."""
    from flyops.fly.placement import plan_placement

    action: dict[str, Action] = {"keep": "keep", "create": "create", "remove": "remove",
                                 "wrong-volume": "change", "blocked": "create"}
    return [Row("machine", r.component, r.app, r.region, action[r.action], f"{r.have}/{r.want}: {r.detail}")
            for r in plan_placement(stack, live.machines, live.volumes)]


def plan_mpg(stack: Stack, live: Live) -> list[Row]:
    """The Managed Postgres cluster named like the database (flyops/fly/mpg.py): create it,
    wait for it, or keep it. Region, plan and disk are set at creation only (flyctl v0.4.87
    has no `mpg update`), so a live cluster that differs is noted, not changed."""
    if stack.database.source != "mpg":
        return []
    from flyops.fly import mpg

    name, want = stack.app_name(COMPONENT_DB), stack.database.managed
    cluster = mpg.pick(live.mpg, name, stack.project.org)
    if cluster is None:
        return [Row("database", COMPONENT_DB, name, name, "create",
                    f"fly mpg create ({want.plan}, {stack.mpg_region()}, {want.volume_size_gb} GB, "
                    f"Postgres {want.pg_major_version}{', PostGIS' if want.postgis else ''})")]
    detail = (f"{cluster.get('id')}: {cluster.get('status')}, {cluster.get('plan')}, {cluster.get('region')}, "
              f"{cluster.get('disk')} GB")
    differs = [f"{k} {have} (stack: {wanted})" for k, have, wanted in (
        ("region", cluster.get("region"), stack.mpg_region()), ("plan", cluster.get("plan"), want.plan),
        ("disk", cluster.get("disk"), want.volume_size_gb)) if str(have).lower() != str(wanted).lower()]
    if differs:
        detail += "; differs from the stack, which flyctl cannot change: " + ", ".join(differs)
    if cluster.get("status") != "ready":
        return [Row("database", COMPONENT_DB, name, cluster.get("id", name), "change",
                    detail + "; inv up waits until it is ready")]
    return [Row("database", COMPONENT_DB, name, cluster.get("id", name), "keep", detail)]


def plan(stack: Stack, live: Live) -> list[Row]:
    return (plan_mpg(stack, live) + plan_apps(stack, live) + plan_volumes(stack, live) + plan_machines(stack, live)
            + plan_secret_names(stack, live) + plan_backups(stack, live))


def plan_backups(stack: Stack, live: Live) -> list[Row]:
    """Fly's point-in-time layer of the cluster (database.pitr), flyops/fly/pgbackup.py."""
    from flyops.fly.pgbackup import plan_rows

    db_app = stack.app_name(COMPONENT_DB)
    return [Row("backups", COMPONENT_DB, db_app, target, action, detail)
            for action, target, detail in plan_rows(stack, live.backups, db_exists=db_app in live.apps)]


def pending(rows: list[Row]) -> list[Row]:
    return [r for r in rows if r.action != "keep"]


def count_actions(rows: list[Row]) -> dict[str, int]:
    counts = Counter(r.action for r in rows)
    return {a: counts.get(a, 0) for a in ("create", "deploy", "change", "keep", "remove")}
