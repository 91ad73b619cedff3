"""Builders return the exact argv; every flag they use exists for that command in flyctl."""

import inspect
import json
from pathlib import Path

import pytest

from flyops.fly.flyctl import commands as fly
from flyops.secret import Secret

FLAGS = json.loads((Path(__file__).resolve().parents[2] / "fakefly" / "flags.json").read_text())
GLOBAL = set(FLAGS["_global"]["flags"])


def test_exact_argv():
    assert fly.apps_list("personal").args == ("apps", "list", "--org", "personal", "--json")
    assert fly.apps_create("a", "o").args == ("apps", "create", "a", "--org", "o", "--json")
    assert fly.volumes_create("a", "keydb_server", "iad", 3).args == (
        "volumes", "create", "keydb_server", "--app", "a", "--region", "iad", "--size", "3", "--yes", "--json",
    )
    assert fly.secrets_import("a", Secret("K=v\n"), stage=True).args == ("secrets", "import", "--app", "a", "--stage")
    assert fly.proxy("db", 15432, 5432).args == ("proxy", "15432:5432", "--app", "db", "--quiet")
    assert fly.postgres_create("db", "o", "fra", cluster_size=3, vm_size="shared-cpu-1x", volume_size_gb=10).args == (
        "postgres", "create", "--name", "db", "--org", "o", "--region", "fra", "--initial-cluster-size", "3",
        "--vm-size", "shared-cpu-1x", "--volume-size", "10",
    )


def test_reads_and_writes_are_marked():
    assert not fly.status("a").mutating and fly.status("a").json
    assert fly.apps_create("a", "o").mutating
    assert not fly.proxy("a", 1, 2).mutating


def test_secret_values_only_on_stdin():
    call = fly.secrets_import("a", Secret("TOKEN=abc123\n"), stage=False)
    assert "abc123" not in " ".join(call.args) and call.stdin.reveal() == "TOKEN=abc123\n"
    assert "abc123" not in repr(call)
    with pytest.raises(TypeError):
        fly.Call(("secrets", "set", Secret("x")), mutating=True)  # type: ignore[arg-type]


def test_deploy_uses_absolute_config_and_working_directory(tmp_path):
    call = fly.deploy("web", tmp_path / "fly/staging/web.toml", workdir=tmp_path / "src")
    assert call.args[:2] == ("deploy", str(tmp_path / "src"))
    assert "--remote-only" in call.args and "--image" not in call.args
    assert call.args[-1] == "--ha=false"   # the stack's placement, not flyctl's HA default, sets the count
    img = fly.deploy("web", tmp_path / "web.toml", workdir=tmp_path, image="registry.fly.io/web:v1")
    assert str(tmp_path) not in img.args[1] and img.args[img.args.index("--image") + 1] == "registry.fly.io/web:v1"
    with pytest.raises(ValueError, match="absolute"):
        fly.deploy("web", Path("fly/staging/web.toml"))


def _command_of(args: tuple[str, ...]) -> tuple[str, list[str]]:
    """Longest command path in flags.json that prefixes args (e.g. 'volumes create')."""
    words = [a for a in args if not a.startswith("-")]
    for n in range(min(3, len(words)), 0, -1):
        key = " ".join(words[:n])
        if key in FLAGS and list(args[:n]) == words[:n]:
            return key, list(args[n:])
    raise AssertionError(f"no flyctl command for {args}")


SAMPLES = {
    name: fn for name, fn in inspect.getmembers(fly, inspect.isfunction) if fn.__module__ == fly.__name__
}


def _sample_call(name, fn, tmp: Path):
    sig = inspect.signature(fn)
    kwargs = {}
    for p in sig.parameters.values():
        if p.default is not inspect.Parameter.empty and p.kind is not inspect.Parameter.KEYWORD_ONLY:
            continue
        ann = str(p.annotation)
        if "Secret" in ann:
            kwargs[p.name] = Secret("K=v\n")
        elif "Path" in ann:
            kwargs[p.name] = tmp / "x.toml"
        elif "dict" in ann:
            kwargs[p.name] = {"k": "v"}
        elif "list" in ann:
            kwargs[p.name] = ["A", "B"]
        elif "int" in ann:
            kwargs[p.name] = 1
        elif "bool" in ann:
            kwargs[p.name] = True
        elif p.default is inspect.Parameter.empty:
            kwargs[p.name] = "x"
    return fn(**kwargs)


@pytest.mark.parametrize("name", sorted(n for n in SAMPLES if not n.startswith("_")))
def test_every_flag_exists_in_flyctl(name, tmp_path):
    call = _sample_call(name, SAMPLES[name], tmp_path)
    if not isinstance(call, fly.Call):
        pytest.skip(f"{name} is not a builder")
    key, rest = _command_of(call.args)
    known = set(FLAGS[key].get("flags", [])) | set(FLAGS[key].get("hidden_flags", [])) | GLOBAL
    used = {a.split("=")[0] for a in rest if a.startswith("-")}
    assert used <= known, f"{key}: unknown flags {used - known}"


def test_scale_count_takes_max_per_region_and_process_group():
    call = fly.scale_count("web", 4, ["iad", "sin"], max_per_region=2, process_group="app")
    assert call.args == ("scale", "count", "4", "--region", "iad,sin", "--max-per-region", "2",
                         "--process-group", "app", "--app", "web", "--yes")
    assert call.mutating
