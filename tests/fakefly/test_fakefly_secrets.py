"""Secrets: the §4 import parser table, list JSON, staged vs deployed (seen through ssh printenv)."""

import json
from pathlib import Path

import pytest
from fakefly import importparse

FLAGS = json.loads((Path(__file__).parent / "flags.json").read_text())

CASES = [
    ("FOO=BAR\n", {"FOO": "BAR"}),
    ("FOO = BAR\n", {"FOO": "BAR"}),                      # key trimmed, leading spaces of value trimmed
    ("  FOO=BAR\n", {"FOO": "BAR"}),
    ("A=x#y\n", {"A": "x"}),                              # inline comment
    ("A=https://h/p#frag\n", {"A": "https://h/p"}),      # URLs cut at #fragment
    ('A="x#y"\n', {"A": "x#y"}),
    ('A="x" # note\n', {"A": "x"}),
    ("A='x#y'\n", {"A": "'x"}),                           # single quotes do not protect #
    ('A="x#y" # note\n', {"A": '"x#y" # note'}),          # odd quote count before first # -> raw
    ('K=""""""\n', {"K": ""}),
    ('K="""one line"""\nL=2\n', {"K": "one line", "L": "2"}),
    ('K="""\na\nb\n"""\n', {"K": "\na\nb\n"}),
    ('K="""a\nb"""\n', {"K": "a\nb"}),
    ('K="""a\n# not a comment\nb="c"\n"""\n', {"K": 'a\n# not a comment\nb="c"\n'}),
    ('OK=1\nK="""never closed\nmore\n', {"OK": "1"}),     # unterminated block dropped
    ("# comment\n\nA=1\n", {"A": "1"}),
    ("A=1\r\nB=2\r\n", {"A": "1", "B": "2"}),              # CRLF
    ('A="x"\n', {"A": "x"}),
    ("A='x'\n", {"A": "x"}),
    ("A=\"'x'\"\n", {"A": "'x'"}),                        # only one pair stripped
    ("A=x\\ny\n", {"A": "x\\ny"}),                        # no escapes
    ("export A=1\n", {"export A": "1"}),                  # no export support
    ("A=${B}\n", {"A": "${B}"}),                          # no interpolation
    ("A=1\nA=2\n", {"A": "2"}),                           # last wins
    ("A=b=c\n", {"A": "b=c"}),                            # first = splits
    ("A=\n", {"A": ""}),
    ("A=x   # c\n", {"A": "x"}),
    ("A=\"x\n", {"A": '"x'}),
    ("A=1", {"A": "1"}),                                  # no trailing newline
    ("A=1\n" + "B=" + "x" * (64 * 1024) + "\nC=3\n", {"A": "1"}),  # >=64 KiB line drops the rest
    ("A=" + "x" * (64 * 1024 - 10) + "\n", {"A": "x" * (64 * 1024 - 10)}),
]


@pytest.mark.parametrize("text,expected", CASES)
def test_import_parser(text, expected):
    assert importparse.parse(text) == expected


@pytest.mark.parametrize("text,message", [
    ("NOPE\n", "Failed to parse secrets from stdin: Secrets must be provided as NAME=VALUE pairs (NOPE is invalid)"),
    (" # indented comment\n", "Failed to parse secrets from stdin: Secrets must be provided as NAME=VALUE pairs ( # indented comment is invalid)"),
    ("", "requires at least one SECRET=VALUE pair"),
    ("# only\n\n", "requires at least one SECRET=VALUE pair"),
])
def test_import_parser_errors(text, message):
    with pytest.raises(importparse.ParseError) as e:
        importparse.parse(text)
    assert str(e.value) == message


def test_import_via_cli_and_list_json(fly):
    fly.run("apps", "create", "web")
    r = fly.run("secrets", "import", "-a", "web", input='A="x" # note\nB="""\nl1\n"""\n')
    assert r.rc == 0
    assert r.out == "Secrets are staged for the first deployment\n"
    rows = fly.run("secrets", "list", "--json", "-a", "web").json()
    assert [list(r) for r in rows] == [FLAGS["secrets list"]["json_fields"]] * 2
    assert [(r["name"], r["status"]) for r in rows] == [("A", "Staged"), ("B", "Staged")]
    assert all(len(r["digest"]) == 16 and int(r["digest"], 16) >= 0 for r in rows)
    from fakefly import state
    st = state.load(fly.home)
    assert st["apps"]["web"]["secrets"]["B"]["value"] == "\nl1\n"
    assert fly.run("secrets", "import", "-a", "web", input="").err == "Error: requires at least one SECRET=VALUE pair\n"


def test_digest_deterministic_per_value(fly):
    fly.run("apps", "create", "a")
    fly.run("apps", "create", "b")
    fly.run("secrets", "set", "K=same", "-a", "a")
    fly.run("secrets", "set", "K=same", "J=other", "-a", "b")
    da = {r["name"]: r["digest"] for r in fly.run("secrets", "list", "-j", "-a", "a").json()}
    db = {r["name"]: r["digest"] for r in fly.run("secrets", "list", "-j", "-a", "b").json()}
    assert da["K"] == db["K"] != db["J"]


def test_set_errors_and_stdin(fly):
    fly.run("apps", "create", "web")
    r = fly.run("secrets", "set", "NOEQ", "-a", "web")
    assert r.err == "Error: could not parse secrets: 'NOEQ': must be in the format NAME=VALUE\n"
    assert fly.run("secrets", "set", "K=-", "-a", "web", input="  from stdin \n").rc == 0
    from fakefly import state
    assert state.load(fly.home)["apps"]["web"]["secrets"]["K"]["value"] == "from stdin"
    assert fly.run("secrets", "list", "-a", "nope", "--json").err == "Error: failed to list app secrets: app not found\n"


def deploy_app(fly, tmp_path, name="web"):
    fly.run("apps", "create", name)
    d = tmp_path / name
    d.mkdir()
    (d / "fly.toml").write_text(f"app = '{name}'\nprimary_region = 'ams'\n[build]\nimage = 'nginx'\n[env]\nPLAIN = 'p'\n")
    r = fly.run("deploy", str(d))
    assert r.rc == 0, r.err
    return d


def printenv(fly, name, app="web"):
    return fly.run("ssh", "console", "-a", app, "-C", f"printenv {name}")


def test_staged_vs_deployed_through_ssh(fly, tmp_path):
    fly.run("apps", "create", "web")
    fly.run("secrets", "set", "K=v1", "-a", "web")
    deploy_app_existing = tmp_path / "web"
    deploy_app_existing.mkdir()
    (deploy_app_existing / "fly.toml").write_text("app = 'web'\nprimary_region = 'ams'\n[build]\nimage = 'nginx'\n[env]\nPLAIN = 'p'\n")
    assert fly.run("deploy", str(deploy_app_existing)).rc == 0
    r = printenv(fly, "K")
    assert r.rc == 0
    assert r.out.splitlines()[-1] == "v1"
    # no services: 1 started machine + a standby that is never started (deployCreateMachinesForGroups),
    # so ssh has one candidate and names none
    assert r.out.splitlines() == ["v1"]
    assert printenv(fly, "PLAIN").out.endswith("p\n")
    assert printenv(fly, "FLY_APP_NAME").out.endswith("web\n")

    # --stage stores only; machines keep the old snapshot
    r = fly.run("secrets", "set", "K=v2", "--stage", "-a", "web")
    assert r.out == "Secrets have been staged, but not set on VMs. Deploy or update machines in this app for the secrets to take effect.\n"
    assert printenv(fly, "K").out.endswith("v1\n")
    assert fly.run("secrets", "list", "-j", "-a", "web").json()[0]["status"] == "Staged"

    # secrets deploy applies it
    assert fly.run("secrets", "deploy", "-a", "web").rc == 0
    assert printenv(fly, "K").out.endswith("v2\n")
    assert fly.run("secrets", "list", "-j", "-a", "web").json()[0]["status"] == "Deployed"

    # without --stage: restart deploy right away
    assert fly.run("secrets", "import", "-a", "web", input="K=v3\n").rc == 0
    assert printenv(fly, "K").out.endswith("v3\n")

    # a change made elsewhere is staged until deployed
    from fakefly import state
    state.set_secret(fly.home, "web", "K", "v4")
    assert printenv(fly, "K").out.endswith("v3\n")
    assert fly.run("secrets", "list", "-j", "-a", "web").json()[0]["status"] == "Staged"

    assert fly.run("secrets", "unset", "K", "-a", "web").rc == 0
    r = printenv(fly, "K")
    assert r.rc == 1 and r.err.endswith("Error: ssh shell: Process exited with status 1\n")


def test_secrets_deploy_without_machines(fly):
    fly.run("apps", "create", "web")
    r = fly.run("secrets", "deploy", "-a", "web")
    assert r.rc == 1 and r.err.startswith("Error: no machines available to deploy\n")
    assert "Try 'fly deploy' first" in r.err


def test_ssh_machine_and_region_selection(fly, tmp_path):
    deploy_app(fly, tmp_path)
    machines = fly.run("machine", "list", "--json", "-a", "web").json()
    mid = next(m["id"] for m in machines if m["state"] == "started")   # the other one is its standby
    r = fly.run("ssh", "console", "-a", "web", "--machine", mid, "-C", "printenv FLY_MACHINE_ID")
    assert (r.rc, r.out) == (0, mid + "\n")
    assert "Connecting to" in r.err
    r = fly.run("ssh", "console", "-a", "web", "--machine", "nope", "-C", "env")
    assert r.err == 'Error: --machine="nope" not found/started\n'
    r = fly.run("ssh", "console", "-a", "web", "-r", "ams", "-C", "env")
    assert "FLY_REGION=ams" in r.out and "PRIMARY_REGION=ams" in r.out
    r = fly.run("ssh", "console", "-a", "web", "-r", "syd", "-C", "env")
    assert r.rc == 1 and "has no started VMs" in r.err


# -- parser.go's two traps, through the CLI (checked against parser.go compiled with Go 1.19) ------


@pytest.mark.parametrize("payload", ['A=ok\nLONE="\n', "A=ok\nLONE='\n", "LONE= '\n", "LONE='#x\n"])
def test_import_panics_on_a_lone_quote_and_sets_nothing(fly, payload):
    """secrets/parser.go parseSecrets slices value[1:len-1] of a one-character quoted value:
    a runtime panic, recovered in main.go `run` (exit 3), printed by sentry.go `printError`."""
    from fakefly import state

    state.seed_app(fly.home, "web")
    r = fly.run("secrets", "import", "-a", "web", "--stage", input=payload)
    assert r.rc == 3
    assert r.out.startswith("Oops, something went wrong! Could you try that again?")
    assert "slice bounds out of range [1:0]" in r.out
    assert state.load(fly.home)["apps"]["web"]["secrets"] == {}


def test_import_stops_silently_at_a_line_of_64_KiB_bytes(fly):
    """bufio.Scanner's default buffer holds 65535 bytes and the newline; a longer line ends
    Scan() and parseSecrets never checks scanner.Err(): exit 0, that entry and later ones lost.
    21845 three-byte characters are 65535 bytes of value, 65537 with `B=`."""
    from fakefly import state

    state.seed_app(fly.home, "web")
    r = fly.run("secrets", "import", "-a", "web", "--stage", input="A=1\nB=" + "日" * 21845 + "\nC=3\n")
    assert r.rc == 0, r.err
    assert sorted(state.load(fly.home)["apps"]["web"]["secrets"]) == ["A"]
    fits = "x" * (65535 - 2)
    r = fly.run("secrets", "import", "-a", "web", "--stage", input=f"A=1\nB={fits}\nC=3\n")
    assert r.rc == 0
    assert sorted(state.load(fly.home)["apps"]["web"]["secrets"]) == ["A", "B", "C"]
