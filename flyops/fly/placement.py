"""Machines per component and region: the stack's `placement` against what runs on Fly.

How Fly places machines (flyctl v0.4.87, read in its source):

* `fly deploy` creates new machines in `primary_region` only
  (internal/command/deploy/machines_launchinput.go launchInputForLaunch), so a first deploy
  leaves every other region empty, whatever volumes exist there.
* It adds, unless `--ha=false`: a second machine for a group with services, a standby
  (`config.standbys`, never started) for a group without, nothing for a group with mounts
  (machines_deploymachinesapp.go deployCreateMachinesForGroups).
* Other regions are reached with `fly scale count N --region a,b --max-per-region M
  --process-group G` (internal/command/scale/count_machines.go): N is the total over the listed
  regions, new machines go round-robin from the first one, so only `--max-per-region` makes it
  "M in each"; a group with mounts takes the region's unattached volume of that name, and
  creates a NEW volume when there is none (machine_defaults.go CreateVolumeRequest).

So: a store region is scaled only when it has an unattached store volume (never a second
volume, never a second machine on one), an app region only where its stores run. Machines
counted are the group's Fly Launch machines that are not standbys; a stopped machine counts
(autostop stops web machines when idle, and a deploy leaves them stopped: shouldSkipLaunch).

`plan_placement` is pure; `converge` makes the calls (scale count for missing machines,
`machine destroy` for extra app machines; extra store machines are reported, never removed:
their volume may hold the region's only copy) and reads back.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from flyops.errors import OpsError, PreconditionFailed
from flyops.fly.flyctl import commands as fly
from flyops.fly.flyctl.output import GONE_VOLUME_STATES
from flyops.fly.flyctl.runner import FlyRunner, parallel
from flyops.stack.model import Stack

PlaceAction = Literal["keep", "create", "remove", "wrong-volume", "blocked"]


def process_group(stack: Stack, component: str) -> str:
    """The fly.toml process group flyops.fly.render gives the component's machines."""
    app = stack.apps.get(component)
    if app is not None and app.role == "worker" and app.command:
        return "worker"
    return "app"


def is_standby(machine: dict[str, Any]) -> bool:
    """fly-go MachineConfig.Standbys: set on the standby flyctl creates for a group without services."""
    return bool((machine.get("config") or {}).get("standbys"))


def _group(machine: dict[str, Any]) -> str:
    return ((machine.get("config") or {}).get("metadata") or {}).get("fly_process_group") or "app"


def _launch(machine: dict[str, Any]) -> bool:
    """flaps ListFlyAppsMachines: Fly Launch (platform v2) machines, not destroyed, not the
    release command machine."""
    md = (machine.get("config") or {}).get("metadata") or {}
    return (md.get("fly_platform_version") == "v2" and machine.get("state") not in ("destroyed", "destroying")
            and md.get("fly_process_group") != "fly_app_release_command")


@dataclass(frozen=True)
class PlaceRow:
    component: str
    app: str
    region: str
    action: PlaceAction
    have: int
    want: int
    group: str = "app"
    machines: tuple[str, ...] = ()  # the machine ids a remove / wrong-volume row is about
    detail: str = ""

    @property
    def pending(self) -> bool:
        return self.action != "keep"


def plan_component(stack: Stack, component: str, machines: list[dict[str, Any]],
                   volumes: list[dict[str, Any]]) -> list[PlaceRow]:
    """Pure: rows for one component from its app's machines (`status --json` Machines or
    `machine list --json`) and, for a store, its volumes (`volumes list --json`)."""
    app = stack.app_name(component)
    want = stack.placement(component)
    group = process_group(stack, component)
    store = stack.stores.get(component)
    ours = [m for m in machines if _launch(m) and _group(m) == group and not is_standby(m)]
    by_region: dict[str, list[dict[str, Any]]] = {}
    for m in ours:
        by_region.setdefault(m.get("region", "?"), []).append(m)
    unattached: dict[str, list[str]] = {}
    if store is not None:
        for v in volumes:
            if v.get("name") == store.volume and v.get("state") not in GONE_VOLUME_STATES and not v.get("attached_machine_id"):
                unattached.setdefault(v["region"], []).append(v["id"])
    rows: list[PlaceRow] = []
    for region in list(want) + sorted(r for r in by_region if r not in want):
        have = by_region.get(region, [])
        n = want.get(region, 0)
        base = dict(component=component, app=app, region=region, have=len(have), want=n, group=group)
        if store is not None:
            wrong = [m["id"] for m in have if _mount_name(m) != store.volume]
            if wrong:
                rows.append(PlaceRow(action="wrong-volume", machines=tuple(wrong), **base,
                                     detail=f"machine {', '.join(wrong)} is not on a {store.volume} volume: "
                                            f"replace it (fly machine destroy, then inv up)"))
                continue
        if len(have) < n:
            missing = n - len(have)
            if store is not None and len(unattached.get(region, [])) < missing:
                rows.append(PlaceRow(action="blocked", **base,
                                     detail=f"needs a machine but {region} has no unattached {store.volume} volume: "
                                            f"inv keydb.volumes --env {stack.env} --store {component} --region {region}"))
                continue
            on = f" on {', '.join(unattached[region][:missing])}" if store is not None else ""
            rows.append(PlaceRow(action="create", **base, detail=f"+{missing} machine(s){on} (fly scale count)"))
        elif len(have) > n:
            extra = [m["id"] for m in _removal_order(have)[: len(have) - n]]
            why = "region not in placement" if n == 0 else f"{len(have)} machines, placement wants {n}"
            if store is not None:
                detail = (f"extra: {why}; kept (its volume may hold this region's only copy): "
                          f"fly machine destroy {' '.join(extra)} --app {app} after checking")
            else:
                detail = f"extra: {why}; destroys {', '.join(extra)}"
            rows.append(PlaceRow(action="remove", machines=tuple(extra), **base, detail=detail))
        else:
            rows.append(PlaceRow(action="keep", **base, detail=f"{len(have)} machine(s)"))
    return rows


def _mount_name(machine: dict[str, Any]) -> str | None:
    mounts = (machine.get("config") or {}).get("mounts") or []
    return mounts[0].get("name") if mounts else None


def _removal_order(machines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Which machines go first: not started before started, then the newest."""
    newest_first = sorted(machines, key=lambda m: m.get("created_at") or "", reverse=True)
    return sorted(newest_first, key=lambda m: m.get("state") == "started")


def plan_placement(stack: Stack, machines_by_app: dict[str, list[dict[str, Any]]],
                   volumes_by_app: dict[str, list[dict[str, Any]]], components: list[str] | None = None) -> list[PlaceRow]:
    """Pure: every selected store and app (not the database) of the stack, in stack order.
    An app absent from `machines_by_app` has no machines (not deployed yet)."""
    rows: list[PlaceRow] = []
    for comp in stack.components():
        if comp.kind == "database" or (components is not None and comp.name not in components):
            continue
        rows += plan_component(stack, comp.name, machines_by_app.get(comp.app, []), volumes_by_app.get(comp.app, []))
    return rows


def scale_calls(rows: list[PlaceRow]) -> list[fly.Call]:
    """One `scale count` per component and per-region count for its `create` rows.

    COUNT = per_region x regions with --max-per-region per_region leaves exactly per_region in
    each listed region (convergeGroupCounts); regions already right are not listed, so their
    machines (and a primary-region standby) are left alone."""
    groups: dict[tuple[str, str, int], list[str]] = {}
    for r in rows:
        if r.action == "create":
            groups.setdefault((r.app, r.group, r.want), []).append(r.region)
    return [fly.scale_count(app, want * len(regions), regions, max_per_region=want, process_group=group)
            for (app, group, want), regions in groups.items()]


def destroy_calls(stack: Stack, rows: list[PlaceRow]) -> list[fly.Call]:
    """Extra machines of web / worker apps (stateless); never a store's."""
    return [fly.machine_destroy(r.app, mid) for r in rows
            if r.action == "remove" and r.component not in stack.stores for mid in r.machines]


def actionable(stack: Stack, rows: list[PlaceRow]) -> list[PlaceRow]:
    """Rows converge() acts on."""
    return [r for r in rows if r.action == "create" or (r.action == "remove" and r.component not in stack.stores)]


# ---------------------------------------------------------------------------------------
# Reading and converging


def read_placement_inputs(stack: Stack, runner: FlyRunner, components: list[str] | None = None,
                          apps: set[str] | None = None) -> tuple[dict[str, list], dict[str, list]]:
    """(machines by app, store volumes by app) for the selected components whose app exists."""
    if apps is None:
        apps = {a.get("Name") for a in runner.json(fly.apps_list(stack.project.org)) or []}
    reads: dict[tuple[str, str], Callable[[], Any]] = {}
    for comp in stack.components():
        if comp.kind == "database" or comp.app not in apps or (components is not None and comp.name not in components):
            continue
        reads[("m", comp.app)] = lambda a=comp.app: (runner.json(fly.status(a)) or {}).get("Machines") or []
        if comp.kind == "store":
            reads[("v", comp.app)] = lambda a=comp.app: runner.json(fly.volumes_list(a)) or []
    got = parallel(reads)
    return ({a: v for (k, a), v in got.items() if k == "m"}, {a: v for (k, a), v in got.items() if k == "v"})


@dataclass
class ConvergeResult:
    scaled: list[str] = field(default_factory=list)  # "component region" that got machines
    destroyed: list[str] = field(default_factory=list)
    left: list[PlaceRow] = field(default_factory=list)  # still pending after the read-back

    def summary(self) -> str:
        parts = []
        if self.scaled:
            parts.append("machines added in " + ", ".join(self.scaled))
        if self.destroyed:
            parts.append("extra machines destroyed: " + ", ".join(self.destroyed))
        return "; ".join(parts) or "placement already matches"


def converge(stack: Stack, runner: FlyRunner, components: list[str] | None = None,
             say: Callable[[str], None] = lambda line: None, *, rows: list[PlaceRow] | None = None) -> ConvergeResult:
    """Make every selected component's machines match its placement; raise if it still does not.

    Each `scale count` is for one app (different apps concurrently); a failure halfway (some
    machines created) is fine: the next run counts what exists and adds only the rest."""
    if rows is None:
        rows = plan_placement(stack, *read_placement_inputs(stack, runner, components), components)
    res = ConvergeResult()
    blocked = [r for r in rows if r.action in ("blocked", "wrong-volume")]

    def refuse_blocked() -> None:  # after doing what can be done: the other regions are placed
        if blocked:
            raise PreconditionFailed(
                "placement cannot be completed: " + "; ".join(f"{r.component} in {r.region}: {r.detail}" for r in blocked),
                fix=f"fix the listed volumes/machines, then re-run (inv plan --env {stack.env} shows them)",
            )

    todo = actionable(stack, rows)
    if not todo:
        refuse_blocked()
        return res
    by_app: dict[str, list[fly.Call]] = {}
    for call in scale_calls(todo) + destroy_calls(stack, todo):
        app = call.args[call.args.index("--app") + 1]
        by_app.setdefault(app, []).append(call)
    for r in todo:
        say(f"  {r.component} {r.region}: {r.detail}")

    def run_app(calls: list[fly.Call]) -> None:
        for call in calls:
            runner.run(call)

    failed: dict[str, OpsError] = {}
    for app, outcome in parallel({app: (lambda c=calls: _capture(run_app, c)) for app, calls in by_app.items()}).items():
        if isinstance(outcome, OpsError):
            failed[app] = outcome
    res.scaled = [f"{r.component} {r.region}" for r in todo if r.action == "create" and r.app not in failed]
    res.destroyed = [mid for r in todo if r.action == "remove" and r.app not in failed for mid in r.machines]
    if failed:
        where = "; ".join(
            f"{comp} in {', '.join(r.region for r in todo if r.app == app)}: {exc.message}"
            for app, exc in failed.items() for comp in {r.component for r in todo if r.app == app})
        raise OpsError(f"placing machines failed for {where}",
                       fix=f"re-run (inv up --env {stack.env} or inv deploy --env {stack.env}): machines already "
                           f"created are counted and only the rest is added; inv plan --env {stack.env} shows what is left")
    if runner.dry:
        return res
    refuse_blocked()
    after = plan_placement(stack, *read_placement_inputs(stack, runner, components), components)
    res.left = [r for r in after if r in actionable(stack, after) or r.action in ("blocked", "wrong-volume")]
    if res.left:
        raise OpsError("machines still differ from the placement after scaling: "
                       + "; ".join(f"{r.component} {r.region} ({r.have}/{r.want}, {r.action})" for r in res.left))
    return res


def _capture(fn: Callable[[list[fly.Call]], None], calls: list[fly.Call]) -> OpsError | None:
    try:
        fn(calls)
    except OpsError as exc:
        return exc
    return None
