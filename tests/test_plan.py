"""The planner is a pure function: live JSON in, rows out."""

from flyops.plan import Live, pending, plan, plan_volumes, summary
from flyops.stack import load_stack
from tests.helpers import REPO

PROD = load_stack(REPO, "production")


def vol(name, region, size=1, state="created", vid=None):
    return {"id": vid or f"vol_{name}_{region}_{size}", "name": name, "region": region, "size_gb": size, "state": state}


def test_nothing_live_means_create_everything():
    rows = plan(PROD, Live())
    assert summary(rows)["keep"] == 0
    apps = [r for r in rows if r.kind == "app"]
    assert {r.app for r in apps} == {c.app for c in PROD.components()}
    vols = [r for r in rows if r.kind == "volume"]
    assert len(vols) == 4 * 3  # four stores, three regions, one volume each


def test_volumes_count_per_region_extend_and_never_shrink():
    app = PROD.app_name("cache")  # cache wants 2 GB in production
    live = Live(volumes={app: [
        vol("keydb_server", "fra", 2),
        vol("keydb_server", "iad", 1),
        vol("keydb_server", "sin", 5),
        vol("keydb_server", "sin", 5, vid="vol_extra"),
        vol("keydb_server", "ams", 2),
        vol("other_name", "fra", 1),
        vol("keydb_server", "fra", 2, state="pending_destroy", vid="vol_dying"),
    ]})
    rows = {(r.target, r.action): r for r in plan_volumes(PROD, live, only_store="cache")}
    assert ("fra", "keep") in rows
    assert rows[("iad", "change")].detail == "extend vol_keydb_server_iad_1 1 GB to 2 GB"
    assert "never shrunk" in rows[("sin", "keep")].detail
    assert "vol_extra" in rows[("sin", "remove")].detail
    assert "region not in the stack" in rows[("ams", "remove")].detail


def test_fully_converged_world_has_no_pending_rows():
    from flyops.wanted import wanted_names

    apps = {c.app: {"Name": c.app, "Deployed": True} for c in PROD.components()}
    volumes = {PROD.app_name(n): [vol(s.volume, r, s.volume_size_gb) for r in PROD.regions] for n, s in PROD.stores.items()}
    secrets = {PROD.app_name(c): [{"name": n, "digest": "d", "status": "Deployed"} for n in names]
               for c, names in wanted_names(PROD).items()}
    rows = plan(PROD, Live(apps=apps, volumes=volumes, secrets=secrets))
    assert pending(rows) == []
    # the cluster's own secrets (set by fly postgres create) are flyctl's, never "remove"
    secrets[PROD.app_name("db")] = [{"name": "SU_PASSWORD", "digest": "d", "status": "Deployed"}]
    assert pending(plan(PROD, Live(apps=apps, volumes=volumes, secrets=secrets))) == []
    secrets[PROD.app_name("web")].append({"name": "LEFTOVER", "digest": "d", "status": "Deployed"})
    apps["my-app-production-old"] = {"Name": "my-app-production-old", "Deployed": True}
    assert {(r.kind, r.target) for r in pending(plan(PROD, Live(apps=apps, volumes=volumes, secrets=secrets)))} == {
        ("secret", "LEFTOVER"), ("app", "my-app-production-old")}


def test_an_app_created_but_never_deployed_is_pending():
    """After an `up` that stopped before its deploy: the apps exist, `Deployed` is false
    (fly apps list --json; fly-go types.go App.Deployed). The database is flyctl's own:
    `fly postgres create` starts its machines, so it is never "to deploy"."""
    apps = {c.app: {"Name": c.app, "Deployed": c.kind == "store"} for c in PROD.components()}
    rows = [r for r in plan(PROD, Live(apps=apps)) if r.kind == "app"]
    assert {r.component for r in rows if r.action == "deploy"} == {"web", "worker"}
    assert {r.component for r in rows if r.action == "keep"} == {"db", *PROD.stores}
    assert summary(rows)["deploy"] == 2 and len(pending(rows)) == 2
