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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from flyops.flyctl import commands as fly
from flyops.flyctl.runner import FlyRunner
from flyops.stack import COMPONENT_DB, Stack
from flyops.wanted import wanted_names

Action = Literal["create", "deploy", "change", "keep", "remove"]
# volumes in these states are on their way out (flyctl drops them from `volumes list` too)
GONE_VOLUME_STATES = {"scheduling_destroy", "fork_cleanup", "waiting_for_detach", "pending_destroy", "destroying", "destroyed"}


@dataclass(frozen=True)
class Row:
    kind: Literal["app", "volume", "secret", "machine", "backups"]
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
    backups: Any = None  # flyops.fly.pgbackup.LiveBackups of the cluster (database.pitr), else None


def parallel(calls: dict[Any, Callable[[], Any]], workers: int = 16) -> dict[Any, Any]:
    """Run independent reads concurrently; re-raise the first error."""
    if not calls:
        return {}
    with ThreadPoolExecutor(max_workers=min(workers, len(calls))) as pool:
        futures = {key: pool.submit(fn) for key, fn in calls.items()}
        return {key: f.result() for key, f in futures.items()}


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
    for (kind, app), value in parallel(reads).items():
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
    """Machines per component and region against the stack's placement (flyops.placement)."""
    from flyops.placement import plan_placement

    action: dict[str, Action] = {"keep": "keep", "create": "create", "remove": "remove",
                                 "wrong-volume": "change", "blocked": "create"}
    return [Row("machine", r.component, r.app, r.region, action[r.action], f"{r.have}/{r.want}: {r.detail}")
            for r in plan_placement(stack, live.machines, live.volumes)]


def plan(stack: Stack, live: Live) -> list[Row]:
    return (plan_apps(stack, live) + plan_volumes(stack, live) + plan_machines(stack, live)
            + plan_secret_names(stack, live) + plan_backups(stack, live))


def plan_backups(stack: Stack, live: Live) -> list[Row]:
    """Fly's point-in-time layer of the cluster (database.pitr), flyops/fly/pgbackup.py."""
    from flyops.fly.pgbackup import plan_rows

    db_app = stack.app_name(COMPONENT_DB)
    return [Row("backups", COMPONENT_DB, db_app, target, action, detail)
            for action, target, detail in plan_rows(stack, live.backups, db_exists=db_app in live.apps)]


def pending(rows: list[Row]) -> list[Row]:
    return [r for r in rows if r.action != "keep"]


def summary(rows: list[Row]) -> dict[str, int]:
    counts = Counter(r.action for r in rows)
    return {a: counts.get(a, 0) for a in ("create", "deploy", "change", "keep", "remove")}


def rows_json(rows: list[Row]) -> list[dict[str, str]]:
    return [asdict(r) for r in rows]
