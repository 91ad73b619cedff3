"""Store volumes: one volume named as in the stack per store per region, at least its size.

Volume names are not unique on Fly, so the planner counts the healthy volumes of the
store's name in each region and creates only what is missing. A smaller volume is
extended; a larger one is kept (Fly volumes cannot shrink, and this code never tries).
Extra volumes and volumes in regions the stack does not have are reported, never
destroyed: they may hold the only copy of a region's data.

`plan_store_volumes(stack, live_by_app)` is pure; `apply_volume_steps` runs the steps
through the runner one by one, in plan order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from flyops.errors import BadInput, OpsError
from flyops.fly.flyctl import commands as fly
from flyops.fly.flyctl.commands import Call
from flyops.fly.flyctl.runner import FlyRunner, parallel
from flyops.fly.plan import live_volumes
from flyops.stack.model import Stack

VolumeAction = Literal["create", "extend", "keep", "extra"]


@dataclass(frozen=True)
class VolumeStep:
    store: str
    app: str
    region: str
    action: VolumeAction
    name: str  # the volume name, e.g. keydb_server
    size_gb: int  # the stack's size
    volume_id: str | None = None
    current_gb: int | None = None
    note: str = ""

    @property
    def mutating(self) -> bool:
        return self.action in ("create", "extend")

    def call(self) -> Call:
        if self.action == "create":
            return fly.volumes_create(self.app, self.name, self.region, self.size_gb)
        if self.action == "extend":
            assert self.volume_id is not None
            return fly.volumes_extend(self.app, self.volume_id, self.size_gb)
        raise ValueError(f"{self.action} has no flyctl call")

    def detail(self) -> str:
        if self.action == "create":
            return f"create {self.name} {self.size_gb} GB"
        if self.action == "extend":
            return f"extend {self.volume_id} {self.current_gb} GB -> {self.size_gb} GB"
        return self.note


@dataclass
class VolumeSelection:
    stores: list[str]
    regions: list[str]
    apps: dict[str, str] = field(default_factory=dict)  # store -> app


def select(stack: Stack, store: str | None = None, region: str | None = None) -> VolumeSelection:
    """Which stores and regions a run covers; bad names are BadInput naming the option."""
    stack.require_fly()
    if store is not None and store not in stack.stores:
        raise BadInput(
            f"--store {store!r} is not a store of environment {stack.env!r}",
            fix=f"use one of: {', '.join(stack.stores) or '(the stack has no stores)'}",
        )
    if region is not None and region not in stack.regions:
        raise BadInput(
            f"--region {region!r} is not a region of environment {stack.env!r}",
            fix=f"use one of: {', '.join(stack.regions)} (fly/{stack.env}.toml environment.regions)",
        )
    stores = [store] if store else list(stack.stores)
    regions = [region] if region else list(stack.regions)
    return VolumeSelection(stores, regions, {s: stack.app_name(s) for s in stores})


def plan_store_volumes(
    stack: Stack, volumes_by_app: dict[str, list[dict[str, Any]]], selection: VolumeSelection | None = None
) -> list[VolumeStep]:
    """Pure: the steps that make every selected store have one big-enough volume per region.

    `volumes_by_app` is `fly volumes list --json` per store app (an app that does not
    exist yet simply has no entry).
    """
    selection = selection or select(stack)
    steps: list[VolumeStep] = []
    for name in selection.stores:
        store = stack.stores[name]
        app = selection.apps.get(name) or stack.app_name(name)
        by_region = live_volumes(volumes_by_app.get(app, []), store.volume)
        placed = stack.placement(name)  # the store's regions (stores.<name>.placement)
        for region in [r for r in selection.regions if r in placed]:
            have = sorted(by_region.get(region, []), key=lambda v: (v.get("created_at") or "", v["id"]))
            base = dict(store=name, app=app, region=region, name=store.volume, size_gb=store.volume_size_gb)
            if not have:
                steps.append(VolumeStep(action="create", **base))
                continue
            for i, vol in enumerate(have):
                size = int(vol.get("size_gb") or 0)
                if i > 0:
                    steps.append(VolumeStep(
                        action="extra", volume_id=vol["id"], current_gb=size, **base,
                        note=f"extra {store.volume} {vol['id']} ({size} GB): not destroyed, it may hold data; "
                        f"`fly volumes destroy {vol['id']}` after checking",
                    ))
                elif size < store.volume_size_gb:
                    steps.append(VolumeStep(action="extend", volume_id=vol["id"], current_gb=size, **base))
                else:
                    note = f"{vol['id']} {size} GB"
                    if size > store.volume_size_gb:
                        note += f" (larger than the stack's {store.volume_size_gb} GB: volumes are never shrunk)"
                    steps.append(VolumeStep(action="keep", volume_id=vol["id"], current_gb=size, note=note, **base))
        if len(selection.regions) == len(stack.regions):
            for region, vols in sorted(by_region.items()):
                if region in placed:
                    continue
                for vol in vols:
                    steps.append(VolumeStep(
                        store=name, app=app, region=region, action="extra", name=store.volume,
                        size_gb=store.volume_size_gb, volume_id=vol["id"], current_gb=int(vol.get("size_gb") or 0),
                        note=f"region {region} is not in the store's placement: {vol['id']} kept (not destroyed)",
                    ))
    return steps


def read_store_volumes(stack: Stack, runner: FlyRunner, selection: VolumeSelection) -> dict[str, list[dict]]:
    """`volumes list --json` for each selected store app that exists (concurrently)."""
    existing = {a["Name"] for a in runner.json(fly.apps_list(stack.project.org)) or []}
    reads: dict[str, Callable[[], Any]] = {
        app: (lambda app=app: runner.json(fly.volumes_list(app)) or [])
        for app in selection.apps.values()
        if app in existing
    }
    return parallel(reads)


def missing_apps(stack: Stack, runner: FlyRunner, selection: VolumeSelection) -> list[str]:
    existing = {a["Name"] for a in runner.json(fly.apps_list(stack.project.org)) or []}
    return [app for app in selection.apps.values() if app not in existing]


def apply_volume_steps(runner: FlyRunner, steps: list[VolumeStep], on_step: Callable[[VolumeStep], None] | None = None) -> int:
    """Run the mutating steps in order; stop at the first failure (a re-run re-plans from
    what exists, so nothing is created twice). Returns the number of steps run."""
    done = 0
    for step in steps:
        if not step.mutating:
            continue
        if on_step:
            on_step(step)
        runner.run(step.call())
        done += 1
    return done


def converge_volumes(stack: Stack, runner: FlyRunner, selection: VolumeSelection, steps: list[VolumeStep],
                     on_step: Callable[[VolumeStep], None] | None = None) -> list[VolumeStep]:
    """Apply the planned steps, then read the volumes back: OpsError naming what still differs.
    Returns the steps that changed something (under --dry: that would have)."""
    todo = [s for s in steps if s.mutating]
    apply_volume_steps(runner, steps, on_step=on_step)
    if runner.dry:
        return todo
    after = [s for s in plan_store_volumes(stack, read_store_volumes(stack, runner, selection), selection) if s.mutating]
    if after:
        raise OpsError("volumes still differ from the stack after applying: "
                       + "; ".join(f"{s.app} {s.region} {s.detail()}" for s in after))
    return todo

