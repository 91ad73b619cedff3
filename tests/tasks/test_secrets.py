"""`inv secrets.diff` / `inv secrets.sync` end to end: hostile values arrive byte for byte,
nothing leaks, drift is caught, faults converge."""

import json
import sys

import pytest

from flyops.stack.envfile import parse_env_text
from tests.helpers import REPO, edit, failed_code
from tests.tasks.conftest import STAGING_VALUES

sys.path.insert(0, str(REPO / "tests" / "fakefly"))
from fakefly import state as fakestate  # noqa: E402

# What python-dotenv hands us must be what the app's process sees. (Empty values are not in
# this corpus: env files treat an empty required key as missing; see test_empty_value_*.)
CORPUS = {
    "PEM_KEY": "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEF\nAASCBKcwggSjAgEAAoIBAQC7\n-----END PRIVATE KEY-----\n",
    "HASHES": "pa#ss#word # not a comment",
    "URL_FRAGMENT": "https://example.com/cb?x=1#frag",
    "DOUBLE_QUOTED": '"quoted"',
    "SINGLE_QUOTED": "'quoted'",
    "BOTH_QUOTES": "it's a \"test\"",
    "EQUALS": "a=b=c==",
    "LEADING_SPACES": "   three spaces",
    "TRAILING_SPACES": "trailing   ",
    "UNICODE": "pässwörd-✓-日本語",
    "TRIPLE_START": '"""starts with triple',
    "LEADING_NEWLINE": "\nfirst line empty",
    "HASH_FIRST": "#not a comment",
    "BACKSLASHES": r"C:\path\n not a newline",
    "DOLLARS": "${HOME} $PATH `id`",
    "TABS": "\tx\t",
}
APPS = ["cable", "cache", "kredis", "jobs", "web", "worker"]


def dotenv_quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def write_env(root, values: dict[str, str]) -> None:
    path = root / "env" / "staging.env"
    path.write_text("".join(f"{k}={dotenv_quote(v)}\n" for k, v in values.items()))
    path.chmod(0o600)
    assert {k: s.reveal() for k, s in parse_env_text(path.read_text()).items()} == values


def give_web(root, keys) -> None:
    edit(root / "fly/stack.toml", 'secrets = ["RAILS_MASTER_KEY"]               # keys taken from env/<env>.env',
         "secrets = [" + ", ".join(f'"{k}"' for k in ["RAILS_MASTER_KEY", *keys]) + "]")


def create_apps(ops, deploy_web=True):
    for c in APPS:
        assert ops.fly("apps", "create", f"my-app-staging-{c}", "--org", "personal").returncode == 0
    if deploy_web:
        r = ops.fly("deploy", "--config", str(ops.root / "fly/staging/web.toml"), "--app", "my-app-staging-web",
                    "--image", "registry.fly.io/my-app:1", "--yes")
        assert r.returncode == 0, r.stderr


def printenv(ops, app, name) -> str:
    # name a machine: with several, flyctl prints "No machine specified, using ..." on stdout
    machines = json.loads(ops.fly("machine", "list", "--app", app, "--json").stdout)
    started = [m["id"] for m in machines if m["state"] == "started"]
    r = ops.fly("ssh", "console", "--app", app, "--machine", started[0], "--command", f"printenv {name}")
    assert r.returncode == 0, r.stderr
    assert r.stdout.endswith("\n")
    return r.stdout[:-1]


@pytest.fixture
def hostile(ops):
    give_web(ops.root, CORPUS)
    write_env(ops.root, {**STAGING_VALUES, **CORPUS})
    create_apps(ops)
    return ops


def test_hostile_values_arrive_byte_for_byte_and_never_leak(hostile):
    ops = hostile
    r = ops.inv("secrets.diff", "--env", "staging", "--json")
    assert r.returncode == 7, r.stderr
    rows = json.loads(r.stdout)["rows"]
    assert {x["status"] for x in rows if x["app"] == "my-app-staging-web" and x["name"] != "DATABASE_URL"} == {"add"}
    outputs = r.stdout + r.stderr
    before = len(ops.changes())
    r = ops.inv("secrets.sync", "--env", "staging", "--yes")
    assert r.returncode == 0, r.stderr
    outputs += r.stdout + r.stderr
    new = ops.changes()[before:]
    assert [m[:2] for m in new] == [["secrets", "import"]] * len(APPS) + [["secrets", "deploy"]]
    assert all("--stage" in m for m in new[:-1]) and new[-1][-1] == "my-app-staging-web"  # one restart: the deployed app
    for name, value in CORPUS.items():
        assert printenv(ops, "my-app-staging-web", name) == value, name
    # the store apps got their own password under the engine's name, consistent with consumers
    st = fakestate.load(ops.home)
    assert st["apps"]["my-app-staging-cache"]["secrets"]["KEYDB_PASSWORD"]["value"] == STAGING_VALUES["CACHE_STORE_PASSWORD"]
    assert st["apps"]["my-app-staging-jobs"]["secrets"]["REDIS_PASSWORD"]["value"] == STAGING_VALUES["JOBS_STORE_PASSWORD"]
    assert st["apps"]["my-app-staging-web"]["secrets"]["REDIS_CACHE_PASSWORD"]["value"] == STAGING_VALUES["CACHE_STORE_PASSWORD"]
    # no value in any argv, any output
    argv_text = "\n".join(json.dumps(e["argv"], ensure_ascii=False) + " ".join(e["argv"]) for e in ops.argv_log())
    for value in [*CORPUS.values(), *STAGING_VALUES.values()]:
        for piece in [value, value.strip(), *value.strip().splitlines()]:
            if len(piece.strip()) >= 5:
                assert piece not in argv_text and piece not in outputs, piece
    lock = json.loads((ops.root / "fly/staging/secrets.lock.json").read_text())
    assert set(lock["apps"]["my-app-staging-web"]) >= set(CORPUS)
    assert CORPUS["PEM_KEY"][:20] not in json.dumps(lock)
    # converged: nothing to do, nothing pending
    n = len(ops.mutations())
    r = ops.inv("secrets.sync", "--env", "staging", "--yes")
    assert r.returncode == 0 and "in sync" in r.stderr
    assert ops.inv("secrets.diff", "--env", "staging").returncode == 0
    assert len(ops.mutations()) == n


def test_change_drift_and_prune(hostile):
    ops = hostile
    assert ops.inv("secrets.sync", "--env", "staging", "--yes").returncode == 0
    # a local change: only the apps that carry the key
    write_env(ops.root, {**STAGING_VALUES, **CORPUS, "CACHE_STORE_PASSWORD": "new-cache-pw-123"})
    r = ops.inv("secrets.diff", "--env", "staging", "--json")
    assert r.returncode == 7
    changed = {(x["app"], x["name"]) for x in json.loads(r.stdout)["rows"] if x["status"] == "change"}
    assert changed == {("my-app-staging-cache", "KEYDB_PASSWORD"), ("my-app-staging-web", "REDIS_CACHE_PASSWORD"),
                       ("my-app-staging-worker", "REDIS_CACHE_PASSWORD")}
    before = len(ops.mutations())
    assert ops.inv("secrets.sync", "--env", "staging", "--yes").returncode == 0
    assert {m[m.index("--app") + 1] for m in ops.mutations()[before:] if m[1] == "import"} == {
        "my-app-staging-cache", "my-app-staging-web", "my-app-staging-worker"}
    # drift: someone changes a secret on Fly behind our back -> reported, sync refuses
    fakestate.set_secret(ops.home, "my-app-staging-worker", "RAILS_MASTER_KEY", "set-in-the-dashboard")
    r = ops.inv("secrets.diff", "--env", "staging", "--json")
    drift = [x for x in json.loads(r.stdout)["rows"] if x["status"] == "drift"]
    assert [(x["app"], x["name"]) for x in drift] == [("my-app-staging-worker", "RAILS_MASTER_KEY")]
    before = len(ops.mutations())
    r = ops.inv("secrets.sync", "--env", "staging", "--yes")
    assert r.returncode == 5 and "changed on Fly outside this repository" in r.stderr and "--force" in r.stderr
    assert len(ops.mutations()) == before
    assert ops.inv("secrets.sync", "--env", "staging", "--yes", "--force").returncode == 0
    assert fakestate.load(ops.home)["apps"]["my-app-staging-worker"]["secrets"]["RAILS_MASTER_KEY"]["value"] == STAGING_VALUES["RAILS_MASTER_KEY"]
    # prune: an unwanted key stays unless --prune
    fakestate.set_secret(ops.home, "my-app-staging-web", "LEFTOVER", "x")
    r = ops.inv("secrets.sync", "--env", "staging", "--yes")
    assert r.returncode == 0 and "LEFTOVER" in fakestate.load(ops.home)["apps"]["my-app-staging-web"]["secrets"]
    r = ops.inv("secrets.sync", "--env", "staging", "--prune")  # not interactive, no --yes
    assert r.returncode == 2
    r = ops.inv("secrets.sync", "--env", "staging", "--prune", "--yes", "--app", "web")
    assert r.returncode == 0, r.stderr
    web = fakestate.load(ops.home)["apps"]["my-app-staging-web"]["secrets"]
    assert "LEFTOVER" not in web and "DATABASE_URL" not in web  # external: never pushed, never pruned


def test_unencodable_value_is_one_clear_error_naming_the_key(ops):
    give_web(ops.root, ["BAD_ONE"])
    write_env(ops.root, {**STAGING_VALUES, "BAD_ONE": '"""a"""\n"""b'})
    create_apps(ops, deploy_web=False)
    before = len(ops.mutations())
    r = ops.inv("secrets.sync", "--env", "staging", "--yes")
    assert r.returncode == 2 and "secret BAD_ONE" in r.stderr
    assert '"""a' not in r.stderr + r.stdout
    assert len(ops.mutations()) == before


def test_empty_value_is_carried_by_the_import_encoding(ops):
    """The env file refuses an empty *required* key; the transport itself carries "" exactly."""
    from flyops.fly.flyctl import commands as fly
    from flyops.fly.flyctl.importfmt import encode_for_import
    from flyops.fly.flyctl.runner import FlyRunner
    from flyops.secret import Secret

    create_apps(ops)
    runner = FlyRunner(env=ops.env())
    runner.run(fly.secrets_import("my-app-staging-web", encode_for_import({"EMPTY": Secret(""), "B": Secret(" ")}), stage=False))
    assert printenv(ops, "my-app-staging-web", "EMPTY") == ""
    assert printenv(ops, "my-app-staging-web", "B") == " "


def test_missing_env_file_and_key(ops):
    (ops.root / "env/staging.env").unlink()
    r = ops.inv("secrets.diff", "--env", "staging")
    assert r.returncode == 2 and "staging.env does not exist" in r.stderr
    write_env(ops.root, {k: v for k, v in STAGING_VALUES.items() if k != "JOBS_STORE_PASSWORD"})
    r = ops.inv("secrets.diff", "--env", "staging")
    assert r.returncode == 2 and "JOBS_STORE_PASSWORD" in r.stderr
    assert ops.argv_log() == []


@pytest.mark.parametrize("fail_at", range(1, 8))
def test_a_failure_at_any_step_then_a_rerun_converges(hostile, fail_at):
    ops = hostile
    base, since = len(ops.mutations()), len(ops.argv_log())
    r = ops.inv("secrets.sync", "--env", "staging", "--yes", FAKEFLY_FAIL_AT=str(base + fail_at))
    assert r.returncode == failed_code(ops.argv_log(), since) and "500" in r.stderr, r.stderr
    r = ops.inv("secrets.sync", "--env", "staging", "--yes")
    assert r.returncode == 0, r.stderr
    after = ops.mutations()[base:]
    imports = [m[m.index("--app") + 1] for m in after if m[:2] == ["secrets", "import"]]
    # each app imported once, plus at most a retry of the call that failed
    assert len(imports) <= len(APPS) + 1 and set(imports) == {f"my-app-staging-{c}" for c in APPS}
    assert ops.inv("secrets.diff", "--env", "staging").returncode == 0
    assert all(s["status"] == "Deployed" for s in json.loads(ops.fly("secrets", "list", "--app", "my-app-staging-web", "--json").stdout))
    for name in ("PEM_KEY", "BOTH_QUOTES"):
        assert printenv(ops, "my-app-staging-web", name) == CORPUS[name]


@pytest.mark.parametrize(("value", "why"), [
    ("'\"'", "lone quote"),  # dotenv single-quoted: the value is one `"`, on which flyctl's parser panics
    ("日" * 22000, "65535 bytes"),  # 22,000 characters (under the old 61,440-character limit), 66,000 bytes
])
def test_values_flyctl_mishandles_are_refused_by_name_before_anything_is_sent(ops, value, why):
    """flyctl's parser (secrets/parser.go) panics on a lone quote and silently drops a line of
    64 KiB bytes with every later entry while exiting 0; the stand-in does the same, so
    sending either would lose secrets. Refused with the key's name, nothing sent."""
    give_web(ops.root, ["ODD_ONE"])
    path = ops.root / "env" / "staging.env"
    path.write_text("".join(f"{k}={v}\n" for k, v in STAGING_VALUES.items()) + f"ODD_ONE={value}\n")
    path.chmod(0o600)
    create_apps(ops, deploy_web=False)
    before = len(ops.mutations())
    r = ops.inv("secrets.sync", "--env", "staging", "--yes")
    assert r.returncode == 2, r.stderr
    assert "secret ODD_ONE" in r.stderr and why in r.stderr
    assert len(ops.mutations()) == before


def test_parallel_sync_keeps_every_apps_minimum_secrets_version(ops):
    """Each flyctl process rewrites the whole app_secrets_minvers map of config.yml from its
    start-up snapshot (appsecrets/minvers.go); the stand-in does too. Imports to eight apps run
    one at a time, so every app's entry is there and equals the server's secrets version, which
    the next deploy then sends (machines_launchinput.go MinSecretsVersion)."""
    from fakefly import flyconfig

    create_apps(ops)
    r = ops.inv("secrets.sync", "--env", "staging", "--yes", FAKEFLY_LATENCY_MS="150")
    assert r.returncode == 0, r.stderr
    apps = fakestate.load(ops.home)["apps"]
    versions = {name: a["secrets_version"] for name, a in apps.items() if a.get("secrets_version")}
    assert len(versions) >= 6
    assert flyconfig.read_minvers(ops.home / "dot-fly") == versions
