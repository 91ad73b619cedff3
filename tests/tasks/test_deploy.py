"""`inv deploy` / `rollback` / `status` / `audit` end to end against the flyctl stand-in."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from tests.deploy_env import STORES, DeployEnv


@pytest.fixture
def ops(tmp_path):
    return DeployEnv(tmp_path)


def _deploys(ops: DeployEnv) -> list[dict]:
    return [r for r in ops.argv_log() if r["argv"][0] == "deploy" and "--build-only" not in r["argv"]]


def _app_of(rec: dict) -> str:
    return rec["argv"][rec["argv"].index("--app") + 1]


def _state(ops: DeployEnv) -> dict:
    return json.loads((ops.home / "state.json").read_text())


def _mutations(ops: DeployEnv) -> list[list[str]]:
    """Calls that change Fly. The stand-in counts every `deploy` as mutating; the image lookup
    (`deploy --build-only --image`) makes no release, so it is left out."""
    return [r["argv"] for r in ops.argv_log() if r["mutating"] and "--build-only" not in r["argv"]]


def test_deploy_staging_in_dependency_order_with_independent_apps_concurrent(ops):
    # each deploy call takes 2 s, so concurrent ones overlap whatever the machine's load
    p = ops.inv("deploy", "--env", "staging", FAKEFLY_DEPLOY_LATENCY_MS="2000")
    assert p.returncode == 0, p.stderr
    assert "6 app(s) on the new release" in p.stdout
    deploys = {(_app_of(r)): r for r in _deploys(ops)}
    assert set(deploys) == {ops.app(c) for c in (*STORES, "worker", "web")}
    end = {a: r["t"] + r["duration"] for a, r in deploys.items()}
    stores = [ops.app(s) for s in STORES]
    # the stores run at once: each one started before any of them finished
    assert max(deploys[s]["t"] for s in stores) < min(end[s] for s in stores)
    # then the worker, then web
    assert deploys[ops.app("worker")]["t"] >= max(end[s] for s in stores)
    assert deploys[ops.app("web")]["t"] >= end[ops.app("worker")]
    # working directories: stores from their build folder, apps from the Rails source, all --config absolute
    for s in STORES:
        argv = deploys[ops.app(s)]["argv"]
        assert argv[1] == str(ops.root / "var" / "build" / "staging" / s)
        assert (ops.root / "var" / "build" / "staging" / s / "Dockerfile").is_file()  # built by deploy
        assert argv[argv.index("--config") + 1] == str(ops.root / "fly" / "staging" / f"{s}.toml")
    for a in ("worker", "web"):
        argv = deploys[ops.app(a)]["argv"]
        assert argv[1] == str(ops.tmp / "my-app") and "--remote-only" in argv
    # the database is never deployed; the release command ran for web only
    assert ops.app("db") not in deploys
    releases = [e["app"] for e in ops.events() if e["type"] == "release_command"]
    assert releases == [ops.app("web")]
    # the lock was taken and given back
    assert ["apps", "create", "my-app-lock-staging", "--org", "personal", "--json"] in _mutations(ops)
    assert ["apps", "destroy", "my-app-lock-staging", "--yes"] in _mutations(ops)
    assert "my-app-lock-staging" not in {a["Name"] for a in ops.fly_json("apps", "list")}


def test_unknown_app_in_only_exits_2_listing_valid_names_and_changes_nothing(ops):
    p = ops.inv("deploy", "--env", "staging", "--only", "web,wrker")
    assert p.returncode == 2
    assert "'wrker'" in p.stderr and "db, cable, cache, kredis, jobs, web, worker" in p.stderr
    assert _mutations(ops) == []


def test_missing_image_is_refused_before_any_app_changes(ops):
    ref = "registry.fly.io/my-app:does-not-exist"
    p = ops.inv("deploy", "--env", "staging", "--image", ref, FAKEFLY_MISSING_IMAGES=ref)
    assert p.returncode == 2, p.stderr
    assert f"image {ref} cannot be deployed" in p.stderr and "nothing was changed" in p.stderr
    assert _mutations(ops) == []
    assert [r["argv"][-3:] for r in ops.argv_log() if r["argv"][0] == "deploy"] == [[ref, "--build-only", "--yes"]]
    assert [e for e in ops.events() if e["type"] == "deploy"] == []
    assert all(len(a["releases"]) == 0 for n, a in _state(ops)["apps"].items() if n != ops.app("db"))


def test_deploy_with_an_image_uses_it_for_the_rails_apps_only(ops):
    ref = "registry.fly.io/my-app:v7"
    p = ops.inv("deploy", "--env", "staging", "--image", ref, "--only", "worker,web,cache")
    assert p.returncode == 0, p.stderr
    assert ops.image("web") == ref and ops.image("worker") == ref
    assert ops.image("cache").startswith("registry.fly.io/my-app-staging-cache:deployment-")
    assert {_app_of(r) for r in _deploys(ops)} == {ops.app("web"), ops.app("worker"), ops.app("cache")}


def test_deploy_refused_while_the_lock_is_held_naming_holder_when_and_why(ops):
    p = ops.inv("lock.acquire", "--env", "staging", "-m", "db maintenance", FLYOPS_OPERATOR="bob@desk")
    assert p.returncode == 0, p.stderr
    before = len(_mutations(ops))
    p = ops.inv("deploy", "--env", "staging")
    assert p.returncode == 4
    assert "staging is locked: held by bob@desk since" in p.stderr
    assert "for lock.acquire: 'db maintenance'" in p.stderr and "nothing was changed" in p.stderr
    new = _mutations(ops)[before:]
    assert [a for a in new if a[0] != "apps" or a[1] != "create"] == []  # only the refused lock attempt
    assert _deploys(ops) == []


def test_failure_on_the_third_wave_then_rollback_restores_every_earlier_image(ops):
    assert ops.inv("deploy", "--env", "staging").returncode == 0
    first = {c: ops.image(c) for c in (*STORES, "worker", "web")}
    # second deploy: web's deploy fails; stores and worker are already on the new release
    p = ops.inv("deploy", "--env", "staging", FAKEFLY_FAIL_MATCH="--app my-app-staging-web")
    assert p.returncode == 8  # failed after changing something
    assert "on the new release: cable, cache, kredis, jobs, worker. Not on it: web failed" in p.stderr
    assert "inv rollback --env staging" in p.stderr
    for c in (*STORES, "worker"):
        assert ops.image(c) != first[c]
        assert ops.version(c) == 2
    assert ops.image("web") == first["web"]
    p = ops.inv("rollback", "--env", "staging", "--json")
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert {a["component"]: a["outcome"] for a in out["apps"]} == {
        "cable": "deployed", "cache": "deployed", "kredis": "deployed", "jobs": "deployed",
        "worker": "deployed", "web": "skipped"}
    for c in (*STORES, "worker", "web"):
        assert ops.image(c) == first[c], c
    # rollback redeploys by image, without the release command
    rb = [r["argv"] for r in _deploys(ops)][-5:]
    assert all("--image" in a and "--skip-release-command" in a for a in rb)
    assert [e["app"] for e in ops.events() if e["type"] == "release_command"] == [ops.app("web")]


def test_rollback_on_failure_takes_the_touched_apps_back_at_once(ops):
    assert ops.inv("deploy", "--env", "staging", "--only", "jobs,worker,web").returncode == 0
    first = {c: ops.image(c) for c in ("jobs", "worker", "web")}
    p = ops.inv("deploy", "--env", "staging", "--only", "jobs,worker,web", "--rollback-on-failure",
                FAKEFLY_FAIL_MATCH="--app my-app-staging-web --yes --remote-only")
    assert p.returncode == 8
    assert "rolled back: jobs v2 -> v3 (deployed), worker v2 -> v3 (deployed), web v1 (skipped)" in p.stdout
    for c in ("jobs", "worker", "web"):
        assert ops.image(c) == first[c]


def test_rollback_to_a_release_that_does_not_exist_exits_2(ops):
    assert ops.inv("deploy", "--env", "staging", "--only", "web").returncode == 0
    n = len(_mutations(ops))
    p = ops.inv("rollback", "--env", "staging", "--app", "web", "--to", "v99")
    assert p.returncode == 2
    assert "my-app-staging-web has no release v99" in p.stderr and "v1" in p.stderr
    p = ops.inv("rollback", "--env", "staging", "--app", "web", "--to", "registry.fly.io/nope:1",
                FAKEFLY_MISSING_IMAGES="registry.fly.io/nope:1")
    assert p.returncode == 2 and "image registry.fly.io/nope:1 cannot be deployed" in p.stderr
    p = ops.inv("rollback", "--env", "staging", "--to", "v1")
    assert p.returncode == 2 and "give --app too" in p.stderr
    assert len(_mutations(ops)) == n


def test_rollback_to_a_named_version(ops):
    assert ops.inv("deploy", "--env", "staging", "--only", "web").returncode == 0
    v1 = ops.image("web")
    assert ops.inv("deploy", "--env", "staging", "--only", "web", "--image", "registry.fly.io/my-app:v2").returncode == 0
    p = ops.inv("rollback", "--env", "staging", "--app", "web", "--to", "v1")
    assert p.returncode == 0, p.stderr
    assert ops.image("web") == v1 and ops.version("web") == 3


def test_two_concurrent_deploys_one_runs_the_other_names_the_holder(ops):
    slow = {"FAKEFLY_DEPLOY_LATENCY_MS": "1500"}
    a = ops.popen("deploy", "--env", "staging", "--only", "cache,worker", FLYOPS_OPERATOR="alice@laptop", **slow)
    b = ops.popen("deploy", "--env", "staging", "--only", "cache,worker", FLYOPS_OPERATOR="bob@desk", **slow)
    results = {}
    for who, proc in (("alice@laptop", a), ("bob@desk", b)):
        out, err = proc.communicate(timeout=300)
        results[who] = (proc.returncode, err)
    codes = sorted(rc for rc, _ in results.values())
    assert codes == [0, 4], results
    winner = next(w for w, (rc, _) in results.items() if rc == 0)
    loser_err = next(err for rc, err in results.values() if rc == 4)
    assert f"held by {winner} since" in loser_err and "for deploy" in loser_err
    # each app was deployed exactly once
    assert sorted(_app_of(r) for r in _deploys(ops)) == [ops.app("cache"), ops.app("worker")]


def test_status_shows_every_app_with_machines_volumes_and_staged_secrets(ops):
    assert ops.inv("deploy", "--env", "staging").returncode == 0
    ops.fly("secrets", "set", "NEW_KEY=v", "--app", ops.app("web"), "--stage")
    p = ops.inv("status", "--env", "staging", "--json")
    assert p.returncode == 0, p.stderr
    st = json.loads(p.stdout)
    apps = {a["component"]: a for a in st["apps"]}
    assert list(apps) == ["db", "cable", "cache", "kredis", "jobs", "web", "worker"]
    assert all(a["exists"] and a["state"] == "deployed" for a in apps.values())
    # staging's placement: one web machine in fra (deploys pass --ha=false; the stack sets the count)
    assert apps["web"]["release"] == 1 and apps["web"]["machines"]["fra"]["started"] == 1
    assert apps["web"]["machines"]["fra"]["checks_passing"] == apps["web"]["machines"]["fra"]["checks_total"] == 1
    assert apps["cache"]["volumes"] == {"fra": ["keydb_server 1GB"]}
    assert apps["db"]["volumes"] == {"fra": ["pg_data 10GB"]}
    assert apps["web"]["secrets_staged"] == ["NEW_KEY"]
    assert apps["worker"]["secrets_staged"] == []
    assert st["lock"] is None
    p = ops.inv("status", "--env", "staging")
    assert p.returncode == 0 and "lock: free" in p.stdout and "my-app-staging-web" in p.stdout
    assert not any(r["mutating"] for r in ops.argv_log()[-12:])


def test_status_reports_apps_that_do_not_exist(tmp_path):
    ops = DeployEnv(tmp_path, seed=False)
    p = ops.inv("status", "--env", "staging", "--json")
    assert p.returncode == 0, p.stderr
    assert {a["state"] for a in json.loads(p.stdout)["apps"]} == {"missing"}
    p = ops.inv("deploy", "--env", "staging")
    assert p.returncode == 5 and "inv up --env staging" in p.stderr


def test_audit_trail_records_deploys_and_locks_without_secret_values(ops):
    assert ops.inv("deploy", "--env", "staging", "--only", "web").returncode == 0
    assert ops.inv("lock.acquire", "--env", "staging", "-m", "freeze").returncode == 0
    assert ops.inv("lock.release", "--env", "staging").returncode == 0
    p = ops.inv("audit", "--env", "staging", "--json")
    assert p.returncode == 0, p.stderr
    entries = json.loads(p.stdout)["entries"]
    assert [e["task"] for e in entries] == ["lock.release", "lock.acquire", "deploy"]
    deploy = entries[-1]
    assert deploy["who"] == "alice@laptop" and deploy["env"] == "staging" and deploy["result"] == "ok"
    assert deploy["changed"] == "deployed web - -> v1"
    assert deploy["details"]["apps"] == {"web": [None, 1, "deployed"]}
    # kept on Fly, readable by anyone in the org with plain flyctl
    machines = ops.fly_json("machine", "list", "--app", "my-app-ops-staging")
    assert len(machines) == 3 and {m["state"] for m in machines} == {"created"}


def test_dry_deploy_reads_prints_the_deploys_and_changes_nothing(ops):
    p = ops.inv("--dry", "deploy", "--env", "staging")
    assert p.returncode == 0, p.stderr
    assert "[dry] fly apps create my-app-lock-staging" in p.stderr
    assert p.stderr.count("[dry] fly deploy ") == 6
    assert "[dry] audit: deploy:" in p.stderr
    assert _mutations(ops) == []


def _apps(ops: DeployEnv) -> set[str]:
    return {a["Name"] for a in ops.fly_json("apps", "list")}


def _processes_of(home) -> list[list[str]]:
    """argv of the live processes whose environment points at this test's stand-in state folder."""
    found = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and int(d.name) != os.getpid():
            try:
                if f"FAKEFLY_HOME={home}".encode() in (d / "environ").read_bytes().split(b"\0"):
                    found.append([a.decode() for a in (d / "cmdline").read_bytes().split(b"\0") if a])
            except OSError:
                continue
    return found


def _flyctl_deploys_running(home) -> int:
    return sum(1 for argv in _processes_of(home)
               if "deploy" in argv and "--build-only" not in argv and any(a.endswith("flyctl") for a in argv))


def test_sigterm_during_a_deploy_lets_the_wave_in_flight_finish_then_gives_the_lock_back(ops):
    p = ops.popen("deploy", "--env", "staging", FAKEFLY_DEPLOY_LATENCY_MS="8000")  # every deploy call takes 8 s
    deadline = time.monotonic() + 60
    while _flyctl_deploys_running(ops.home) < 4:  # the four stores' deploy calls, in flight at once
        assert p.poll() is None, p.communicate()
        assert time.monotonic() < deadline, "the stores' deploys never started"
        time.sleep(0.05)
    assert "my-app-lock-staging" in _apps(ops)  # under the lock
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 130 and "interrupted" in err, err
    assert "stopping: nothing new starts; waiting for the 4 deploy(s) in flight" in err  # progress is on stderr
    deployed = {_app_of(r) for r in _deploys(ops)}
    assert deployed == {ops.app(c) for c in STORES}  # the wave in flight finished...
    assert "my-app-staging-worker" not in deployed and "my-app-staging-web" not in deployed  # ...nothing later began
    assert "my-app-lock-staging" not in _apps(ops)  # the lock was given back
    assert _processes_of(ops.home) == []  # and no flyctl call goes on behind our back


def test_a_worker_deploy_with_its_standby_succeeds(ops):
    # a worker first deployed with flyctl's default --ha: 1 machine + a standby that is created
    # and never started (deployCreateMachinesForGroups); the old report called that "1/2 not started"
    config = ops.root / "fly" / "staging" / "worker.toml"
    r = ops.fly("deploy", "--config", str(config), "--app", ops.app("worker"), "--image", "registry.fly.io/my-app:0", "--yes")
    assert r.returncode == 0, r.stderr
    machines = ops.fly_json("machine", "list", "--app", ops.app("worker"))
    assert sorted(m["state"] for m in machines) == ["created", "started"]
    p = ops.inv("deploy", "--env", "staging", "--only", "worker", "--image", "registry.fly.io/my-app:1",
                "--rollback-on-failure")
    assert p.returncode == 0, p.stderr
    assert "1 standby" in p.stdout and "rolled back" not in p.stdout
    after = ops.fly_json("machine", "list", "--app", ops.app("worker"))
    assert sorted(m["state"] for m in after) == ["created", "started"]     # the standby was not started
    assert {m["config"]["image"] for m in after} == {"registry.fly.io/my-app:1"}
    assert not [m for m in _mutations(ops) if m[:2] in (["scale", "count"], ["machine", "destroy"])]


def test_a_web_deploy_with_an_autostopped_machine_succeeds(ops):
    # autostop stops an idle web machine; a deploy updates it but leaves it stopped
    # (machines_launchinput.go shouldSkipLaunch). That is a healthy release, not a failure.
    assert ops.inv("deploy", "--env", "staging", "--image", "registry.fly.io/my-app:1").returncode == 0
    (web,) = ops.fly_json("machine", "list", "--app", ops.app("web"))
    assert ops.fly("machine", "stop", web["id"], "--app", ops.app("web")).returncode == 0
    p = ops.inv("deploy", "--env", "staging", "--only", "web", "--image", "registry.fly.io/my-app:2",
                "--rollback-on-failure")
    assert p.returncode == 0, p.stderr + p.stdout
    assert "1 stopped" in p.stdout and "rolled back" not in p.stdout
    (after,) = ops.fly_json("machine", "list", "--app", ops.app("web"))
    assert after["state"] == "stopped" and after["config"]["image"] == "registry.fly.io/my-app:2"


def test_a_web_deploy_whose_started_machine_fails_checks_fails_and_rolls_back(ops):
    assert ops.inv("deploy", "--env", "staging", "--image", "registry.fly.io/my-app:1").returncode == 0
    p = ops.inv("deploy", "--env", "staging", "--only", "web", "--image", "registry.fly.io/my-app:2",
                "--rollback-on-failure", FAKEFLY_UNHEALTHY=ops.app("web"))
    assert p.returncode == 1
    assert "rolled back" in p.stdout


def test_production_deploy_places_machines_in_every_region_and_names_a_region_without_volume(tmp_path):
    ops = DeployEnv(tmp_path, env="production")
    # a region without an unattached volume: scale count would create a second volume, so it is refused
    vols = ops.fly_json("volumes", "list", "--app", ops.app("cable"))
    sin = next(v for v in vols if v["region"] == "sin")
    assert ops.fly("volumes", "destroy", sin["id"], "--yes").returncode == 0
    p = ops.inv("deploy", "--env", "production", "--image", "registry.fly.io/my-app:1")
    assert p.returncode == 8  # the other apps and regions were deployed: "partly changed", not "failed"
    assert "changed before it stopped" in p.stderr
    assert "cable" in p.stderr + p.stdout and "sin has no unattached keydb_server volume" in p.stderr + p.stdout
    cable = ops.fly_json("machine", "list", "--app", ops.app("cable"))
    assert sorted(m["region"] for m in cable) == ["fra", "iad"]
    assert len(ops.fly_json("volumes", "list", "--app", ops.app("cable"))) == 2   # no volume created by scale count
    # the fix the message names, then the next run converges
    ops.fly("volumes", "create", "keydb_server", "--region", "sin", "--app", ops.app("cable"), "--yes")
    p = ops.inv("deploy", "--env", "production", "--image", "registry.fly.io/my-app:1")
    assert p.returncode == 0, p.stderr + p.stdout
    for c in (*STORES, "worker", "web"):
        regions = sorted(m["region"] for m in ops.fly_json("machine", "list", "--app", ops.app(c)))
        assert set(regions) == {"fra", "iad", "sin"}, (c, regions)
    st = json.loads(ops.inv("status", "--env", "production", "--json").stdout)
    for a in st["apps"]:
        if a["component"] != "db":
            assert sorted(a["machines"]) == ["fra", "iad", "sin"] and a["healthy"], a
