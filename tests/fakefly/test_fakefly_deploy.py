"""deploy (§3, §19), releases, machine list, release command, volumes on first deploy."""

import json
import re
from pathlib import Path

FLAGS = json.loads((Path(__file__).parent / "flags.json").read_text())

TOML = """app = '{app}'
primary_region = 'ams'

[build]
{build}

[deploy]
  release_command = 'bin/rails db:prepare'

[env]
  RAILS_ENV = 'production'

[http_service]
  internal_port = 3000

[checks.alive]
  type = 'http'
  port = 3000
  path = '/up'
  interval = '15s'
  timeout = '2s'
"""


def project(tmp_path, app="web", build="  image = 'registry.example.com/web:1'", extra=""):
    d = tmp_path / f"proj-{app}"
    d.mkdir(exist_ok=True)
    (d / "fly.toml").write_text(TOML.format(app=app, build=build) + extra)
    return d


def test_first_deploy_creates_release_and_machines(fly, tmp_path):
    fly.run("apps", "create", "web")
    d = project(tmp_path)
    r = fly.run("deploy", "--remote-only", "--yes", "--wait-timeout", "5m", cwd=d)
    assert r.rc == 0, r.err
    assert "==> Verifying app config" in r.err and "==> Verifying app config" not in r.out
    assert "Validating " in r.out and "✓ Configuration is valid" in r.out
    assert "Visit your newly deployed app at https://web.fly.dev/" in r.out
    rels = fly.run("releases", "--json", "-a", "web").json()
    assert len(rels) == 1 and list(rels[0]) == FLAGS["releases"]["json_fields"]
    assert rels[0]["Version"] == 1 and rels[0]["Status"] == "complete"
    assert rels[0]["ImageRef"] == "registry.example.com/web:1"
    machines = fly.run("machine", "list", "--json", "-a", "web").json()
    assert len(machines) == 2                              # HA without mounts
    for m in machines:
        assert set(m) <= set(FLAGS["machine list"]["json_fields"])
        assert {"id", "image_ref", "cordoned", "config", "state"} <= set(m)
        assert m["region"] == "ams" and m["state"] == "started"
        assert m["config"]["metadata"]["fly_release_version"] == "1"
        assert m["config"]["metadata"]["fly_platform_version"] == "v2"
        assert m["config"]["env"]["RAILS_ENV"] == "production"
        assert m["checks"] == [{"name": "alive", "status": "passing", "output": "OK", "updated_at": m["checks"][0]["updated_at"]}]
    ev = fly.events()
    assert {"type": "release_command", "app": "web", "command": "bin/rails db:prepare", "release": 1}.items() <= ev[0].items()
    assert ev[1]["type"] == "deploy" and ev[1]["release"] == 1
    st = fly.run("status", "--json", "-a", "web").json()
    assert st["Deployed"] is True and st["Status"] == "deployed" and st["Version"] == 1
    assert [m["id"] for m in st["Machines"]] == sorted((m["id"] for m in machines), reverse=True)

    # second deploy updates the same machines, new image and version
    r = fly.run("deploy", "-i", "registry.example.com/web:2", "--skip-release-command", cwd=d)
    assert r.rc == 0
    machines2 = fly.run("m", "ls", "--json", "-a", "web").json()
    assert {m["id"] for m in machines2} == {m["id"] for m in machines}
    assert all(m["config"]["image"] == "registry.example.com/web:2" for m in machines2)
    assert all(m["config"]["metadata"]["fly_release_version"] == "2" for m in machines2)
    assert len([e for e in fly.events() if e["type"] == "release_command"]) == 1
    rels = fly.run("releases", "--json", "--image", "-a", "web").json()
    assert [r["Version"] for r in rels] == [2, 1]


def test_build_from_dockerfile_image_ref(fly, tmp_path):
    fly.run("apps", "create", "web")
    d = project(tmp_path, build="")
    r = fly.run("deploy", str(d))
    assert r.rc == 1 and "Dockerfile" in r.err
    (d / "Dockerfile").write_text("FROM ruby\n")
    r = fly.run("deploy", str(d), "--build-arg", "A=1,2", "--build-arg", "B=3")
    assert r.rc == 0, r.err
    ref = fly.run("releases", "-j", "-a", "web").json()[0]["ImageRef"]
    assert re.fullmatch(r"registry\.fly\.io/web:deployment-[0-9A-HJKMNP-TV-Z]{26}", ref)
    from fakefly import state
    build = state.load(fly.home)["builds"][-1]
    assert build["image"] == ref and build["build_args"] == {"A": "1,2", "B": "3"}


def test_config_resolution_and_errors(fly, tmp_path):
    fly.run("apps", "create", "web")
    d = project(tmp_path)
    (d / "fly.production.toml").write_text((d / "fly.toml").read_text())
    # a relative --config is resolved from the WORKING_DIRECTORY argument
    assert fly.run("deploy", str(d), "--config", "fly.production.toml", cwd=tmp_path).rc == 0
    r = fly.run("deploy", str(d), "-c", "nope.toml", cwd=tmp_path)
    assert r.err == "Error: config file not found at specified path: nope.toml (also tried: nope.toml/fly.toml)\n"
    (d / "bad.toml").write_text("app = \n")
    r = fly.run("deploy", "-c", str(d / "bad.toml"))
    assert r.rc == 1 and r.err.startswith(f"Error: failed loading app config from {d / 'bad.toml'}: ")
    r = fly.run("deploy", str(d), "-a", "ghost")
    assert r.err == "Error: the app name ghost could not be found, did you create the app or misspell it in the fly.toml file or via -a?\n"


def test_missing_image_fails_without_release(fly, tmp_path):
    fly.run("apps", "create", "web")
    d = project(tmp_path)
    r = fly.run("deploy", cwd=d, env={"FAKEFLY_MISSING_IMAGES": "registry.example.com/web:1"})
    assert r.rc == 1 and r.err.strip().splitlines()[-1].startswith("Error: failed to fetch an image")
    assert fly.run("releases", "-j", "-a", "web").json() == []


def test_unhealthy_deploy_fails(fly, tmp_path):
    fly.run("apps", "create", "web")
    d = project(tmp_path)
    r = fly.run("deploy", cwd=d, env={"FAKEFLY_UNHEALTHY": "web"})
    assert r.rc == 1 and "Error: timeout reached waiting for health checks to pass" in r.err
    assert fly.run("releases", "-j", "-a", "web").json()[0]["Status"] == "failed"
    machines = fly.run("machine", "list", "-j", "-a", "web").json()
    assert {c["status"] for m in machines for c in m["checks"]} == {"critical"}


MOUNTS = """
[[mounts]]
  source = 'data'
  destination = '/data'
"""


def test_mounts_first_deploy_creates_volume_later_missing_is_error(fly, tmp_path):
    fly.run("apps", "create", "web")
    d = project(tmp_path, extra=MOUNTS)
    r = fly.run("deploy", cwd=d)
    assert r.rc == 0, r.err
    assert "Creating a 1 GB volume named 'data' for process group 'app'. Use 'fly vol extend' to increase its size" in r.out
    machines = fly.run("machine", "list", "-j", "-a", "web").json()
    vols = fly.run("volumes", "list", "-j", "-a", "web").json()
    assert len(machines) == 1 and len(vols) == 1             # no HA for groups with mounts
    assert vols[0]["attached_machine_id"] == machines[0]["id"] and vols[0]["region"] == "ams"
    assert machines[0]["config"]["mounts"][0]["volume"] == vols[0]["id"]
    # machine destroyed, volume destroyed: not a first deploy any more (the app is deployed), so
    # no volume is provisioned; machines.go validateVolumeConfig, group without machines
    assert fly.run("machine", "destroy", machines[0]["id"], "--force").rc == 0
    assert fly.run("volumes", "destroy", vols[0]["id"], "-y").rc == 0
    r = fly.run("deploy", cwd=d)
    assert r.rc == 1
    assert r.err.endswith("Error: creating a new machine in group 'app' requires an unattached 'data' volume. "
                          "Create it with `fly volume create data`\n")
    assert [x["Version"] for x in fly.run("releases", "-j", "-a", "web").json()] == [1]   # before the release


def test_mounts_use_existing_unattached_volumes(fly, tmp_path):
    # deploy_first.go provisionVolumesOnFirstDeploy creates none (unattached ones exist);
    # deployCreateMachinesForGroups: a group with mounts gets ONE machine, whatever the volumes
    fly.run("apps", "create", "web")
    fly.run("volumes", "create", "data", "-r", "ams", "-n", "2", "-a", "web")
    d = project(tmp_path, extra=MOUNTS)
    r = fly.run("deploy", cwd=d)
    assert r.rc == 0 and "Creating a" not in r.out
    machines = fly.run("machine", "list", "-j", "-a", "web").json()
    assert len(machines) == 1
    vols = fly.run("volumes", "list", "-j", "-a", "web").json()
    assert sorted(bool(v["attached_machine_id"]) for v in vols) == [False, True]


def test_deploy_latency(fly, tmp_path):
    fly.run("apps", "create", "web")
    d = project(tmp_path)
    fly.run("deploy", cwd=d, env={"FAKEFLY_DEPLOY_LATENCY_MS": "300"})
    fly.run("status", "-j", "-a", "web", env={"FAKEFLY_DEPLOY_LATENCY_MS": "300"})
    log = fly.argv_log()
    assert log[-2]["duration"] >= 0.3 and log[-1]["duration"] < 0.3
