"""Flag parsing, aliases, token check, streams and exit codes (reference §0)."""

import json
from pathlib import Path

FLAGS = json.loads((Path(__file__).parent / "flags.json").read_text())


def test_unknown_flag_usage_on_stdout(fly):
    r = fly.run("apps", "list", "--x")
    assert r.rc == 1
    assert r.err == "Error: unknown flag: --x\n"
    assert r.out.startswith("Usage:")


def test_unknown_shorthand_flag(fly):
    r = fly.run("apps", "list", "-z")
    assert r.rc == 1
    assert "Error: unknown shorthand flag: 'z' in -z" in r.err


def test_unknown_root_command(fly):
    r = fly.run("frobnicate")
    assert r.rc == 1
    assert r.err == 'Error: unknown command "frobnicate" for "flyctl"\n'
    assert r.out == "Run 'flyctl --help' for usage.\n"


def test_group_with_junk_prints_help_exit_0(fly):
    r = fly.run("apps", "foo")
    assert r.rc == 0
    assert "Usage:" in r.out


def test_arg_count_error(fly):
    r = fly.run("volumes", "create", "-a", "x")
    assert r.rc == 1
    assert "Error: accepts 1 arg(s), received 0" in r.err
    assert r.out.startswith("Usage:")


def test_token_required(fly):
    r = fly.run("apps", "list", env={"FLY_API_TOKEN": None})
    assert r.rc == 1
    assert r.err == "Error: no access token available. Please login with 'flyctl auth login'\n"
    for how in ({"FLY_ACCESS_TOKEN": "t"}, {"FLY_API_TOKEN": "t"}):
        assert fly.run("apps", "list", env={"FLY_API_TOKEN": None, **how}).rc == 0
    assert fly.run("apps", "list", "-t", "tok", env={"FLY_API_TOKEN": None}).rc == 0
    assert fly.run("--access-token=tok", "apps", "list", env={"FLY_API_TOKEN": None}).rc == 0


def test_home_required(fly):
    r = fly.run("apps", "list", env={"FAKEFLY_HOME": None})
    assert r.rc != 0
    assert "FAKEFLY_HOME" in r.err


def test_flag_forms_and_aliases(fly):
    assert fly.run("apps", "create", "--name=one", "--org", "personal").rc == 0
    assert fly.run("app", "create", "two", "-o", "personal", "-j").rc == 0
    assert fly.run("apps", "create", "three", "-opersonal").rc == 0
    names = [a["Name"] for a in fly.run("apps", "ls", "--json=true").json()]
    assert names == ["one", "three", "two"]
    r = fly.run("apps", "rm", "one", "--auto-confirm")
    assert (r.rc, r.out) == (0, "Destroyed app one\n")
    assert fly.run("apps", "delete", "two", "-y").rc == 0
    assert fly.run("apps", "remove", "three", "--yes").rc == 0
    assert fly.run("apps", "list", "--json").json() == []


def test_bool_flag_bad_value(fly):
    r = fly.run("apps", "list", "--json=maybe")
    assert r.rc == 1
    assert 'invalid argument "maybe"' in r.err


def test_flag_needs_argument(fly):
    r = fly.run("status", "-a")
    assert r.rc == 1 and "flag needs an argument" in r.err


def test_all_listed_flags_parse():
    """Every flag name in flags.json is accepted by its command (parsed in-process)."""
    from fakefly import cli

    for cmd, spec in FLAGS.items():
        if cmd.startswith("_"):
            continue
        node, _ = cli.find_command(cmd.split())
        assert node.path == tuple(cmd.split()), cmd
        for name in spec["flags"] + spec.get("hidden_flags", []):
            canon, typ = cli.flag_table(node)[name]
            token = name if typ is bool or canon in cli.NO_OPT_DEFAULT else (name + ("=1" if name.startswith("--") else "1"))
            cli.parse_flags(node, [token])


def test_aliases_resolve():
    from fakefly import cli

    for path, want in [("m ls", ("machine", "list")), ("machines list", ("machine", "list")),
                       ("vol ls", ("volumes", "list")), ("v rm", ("volumes", "destroy")),
                       ("volume create", ("volumes", "create")), ("pg ls", ("postgres", "list")),
                       ("secrets ls", ("secrets", "list")), ("apps releases", ("apps", "releases"))]:
        assert cli.find_command(path.split())[0].path == want


def test_version(fly):
    r = fly.run("version", env={"FLY_API_TOKEN": None})
    assert r.rc == 0 and r.out.startswith("flyctl v0.4.87")
    assert fly.run("--version").out == r.out


def test_json_four_space_indent_trailing_newline(fly):
    r = fly.run("apps", "list", "--json")
    assert r.out == "[]\n"
    fly.run("apps", "create", "a1", "-o", "personal")
    out = fly.run("apps", "list", "--json").out
    assert out.startswith("[\n    {\n        \"ID\"") and out.endswith("]\n")


def test_fly_json_env(fly):
    assert fly.run("apps", "list", env={"FLY_JSON": "1"}).out == "[]\n"


def test_argv_log(fly):
    fly.run("apps", "create", "a1", "-o", "personal")
    fly.run("apps", "list", "--json")
    fly.run("secrets", "import", "-a", "a1", input="K=supersecret\n")
    log = fly.argv_log()
    assert [e["argv"][:2] for e in log] == [["apps", "create"], ["apps", "list"], ["secrets", "import"]]
    assert [e["mutating"] for e in log] == [True, False, True]
    assert all(set(e) == {"argv", "t", "pid", "mutating", "exit", "duration"} for e in log)
    assert "supersecret" not in (fly.home / "argv.log").read_text()
