"""Argument parsing (cobra/pflag-like), dispatch, logging, latency and failure injection."""

from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path

from . import state as S

HERE = Path(__file__).resolve().parent.parent
FLAGS = json.loads((HERE / "flags.json").read_text())
PROG = "flyctl"

# ------------------------------------------------------------------ flag types

BOOL_FLAGS = {
    "--yes", "--json", "--detach", "--now", "--no-deploy", "--remote-only", "--local-only",
    "--build-only", "--push", "--wg", "--https-failover", "--no-cache", "--nixpacks", "--buildkit",
    "--recreate-builder", "--ha", "--smoke-checks", "--dns-checks", "--no-public-ips", "--flycast",
    "--update-only", "--skip-release-command", "--force-machines", "--stage", "--all",
    "--no-encryption", "--require-unique-zone", "--unique-zone-app-wide", "--scheduled-snapshots",
    "--watch", "--deployment", "--quiet", "--rm", "--skip-dns-registration", "--autostart",
    "--shell", "--use-zstd", "--force", "--display-config", "--with-new-volumes", "--strict",
    "--local", "--yaml", "--toml", "--watch-stdin", "--select", "--pty", "--no-container",
    "--enable-backups", "--stolon", "--flex", "--superuser", "--generate-name", "--save",
    "--machines", "--verbose", "--debug", "--help", "--version", "--build-remote-only",
    "--build-local-only", "--no-build-cache", "--build-nixpacks", "--build-depot", "--copy-config",
    "--agent", "--dotssh", "--overwrite", "--public", "--shadow-write-through", "--accelerate",
    "--deleted", "--no-owner", "--create", "--clean", "--data-only", "--immediate-checkpoint",
    "--restore-target-inclusive", "--auto-confirm", "--no-create-app", "--no-create", "--legacy",
    "--reuse-app", "--force-name", "--no-db", "--no-redis", "--no-object-storage",
    "--no-github-workflow", "--dockerignore-from-gitignore", "--attach", "--http-failover",
    "--export-manifest-only", "--enable-postgis-support", "--v2",
}
INT_FLAGS = {
    "--count", "--snapshot-retention", "--initial-cluster-size", "--volume-size",
    "--max-per-region", "--rate", "--timeout", "--max-concurrent", "--volume-initial-size",
    "--compression-level", "--internal-port", "--hours", "--vm-cpus", "--immediate-max-concurrent",
}
ARRAY_FLAGS = {  # StringArray: repeatable, no comma splitting
    "--build-arg", "--build-secret", "--env", "--metadata", "--file-local", "--file-literal",
    "--file-secret", "--label", "--kernel-arg", "--secret",
}
SLICE_FLAGS = {  # StringSlice: repeatable and comma-separated
    "--regions", "--only-regions", "--exclude-regions", "--only-machines", "--exclude-machines",
    "--process-groups", "--buildpacks-volume", "--standby-for", "--port", "--username",
}
NO_OPT_DEFAULT = {"--depot": "true", "--autostop": "stop", "--db": "true"}
FLOAT_FLAGS = {"--max-unavailable"}
ALIASES = {
    "--auto-confirm": "--yes", "--http-failover": "--https-failover", "--only-regions": "--regions",
    "--cpus": "--vm-cpus", "--vm-cpukind": "--vm-cpu-kind", "--memory": "--vm-memory",
    "--group": "--process-group", "--no-create": "--no-create-app", "--vm-gpukind": "--vm-gpu-kind",
}
# per-command type overrides
OVERRIDES = {
    ("volumes", "create"): {"--size": int},
    ("releases",): {"--image": bool},
    ("apps", "releases"): {"--image": bool},
    ("volumes", "snapshots", "create"): {},
    ("mpg", "create"): {"--pg-major-version": int},
}
DEFAULTS = {
    "--wg": True, "--https-failover": True, "--ha": True, "--smoke-checks": True,
    "--dns-checks": True, "--require-unique-zone": True, "--scheduled-snapshots": True,
    "--flex": True, "--superuser": True, "--autostart": True, "--no-owner": True, "--create": True,
    "--restore-target-inclusive": True, "--v2": True,
}


class FlyError(Exception):
    """An error flyctl prints as `Error: <message>` and exits 1 for."""

    def __init__(self, message: str, *, usage: bool = False, extra: list[str] | None = None, code: int = 1):
        super().__init__(message)
        self.message = message
        self.usage = usage
        self.extra = extra or []
        self.code = code


class GoPanic(Exception):
    """A panic flyctl recovers in main.go `run`: internal/sentry/sentry.go `printError` writes
    "Oops, something went wrong! Could you try that again?", the value and a stack to stdout,
    and the exit code is 3."""


class Exit(Exception):
    def __init__(self, code: int = 0):
        self.code = code


# ------------------------------------------------------------------ command tree


class Node:
    def __init__(self, name: str, path: tuple[str, ...]):
        self.name = name
        self.path = path
        self.aliases: list[str] = []
        self.children: dict[str, Node] = {}
        self.spec: dict = {}
        self.runnable = False

    def child(self, token: str) -> Node | None:
        for c in self.children.values():
            if token == c.name or token in c.aliases:
                return c
        return None


EXTRA_SPECS = {
    "version": {"flags": ["--json", "-j"], "positional": "none", "json_fields": []},
    "apps releases": FLAGS.get("releases", {}),
    "m": None,
}


def build_tree() -> Node:
    root = Node(PROG, ())
    specs = {k: v for k, v in FLAGS.items() if not k.startswith("_")}
    specs["version"] = EXTRA_SPECS["version"]
    specs["apps releases"] = dict(FLAGS["releases"])
    for key, spec in specs.items():
        parts = key.split()
        node = root
        for i, p in enumerate(parts):
            nxt = node.children.get(p)
            if nxt is None:
                nxt = Node(p, tuple(parts[: i + 1]))
                node.children[p] = nxt
            node = nxt
        node.spec = spec
        node.aliases = list(spec.get("aliases", []))
        node.runnable = not str(spec.get("positional", "")).startswith("group")
    # nodes that only exist as prefixes (e.g. "ssh", "tokens create") are groups
    def fix(n: Node):
        if n.children and not n.spec:
            n.runnable = False
        elif n.children and str(n.spec.get("positional", "")).startswith("group"):
            n.runnable = False
        for c in n.children.values():
            fix(c)
    fix(root)
    return root


TREE = build_tree()


def flag_table(node: Node) -> dict[str, tuple[str, object]]:
    """name -> (canonical long name, type)."""
    names = list(node.spec.get("flags", [])) + list(node.spec.get("hidden_flags", []))
    names += FLAGS["_global"]["flags"]
    if node is TREE:
        names += FLAGS["_global"]["root_only_flags"]
    table: dict[str, tuple[str, object]] = {}
    last_long = None
    overrides = OVERRIDES.get(node.path, {})
    for n in names:
        if n.startswith("--"):
            last_long = n
            canon = ALIASES.get(n, n)
            table[n] = (canon, flag_type(canon, overrides))
        elif n.startswith("-") and last_long:
            canon = ALIASES.get(last_long, last_long)
            table[n] = (canon, flag_type(canon, overrides))
    return table


def flag_type(canon: str, overrides: dict):
    if canon in overrides:
        return overrides[canon]
    if canon in BOOL_FLAGS:
        return bool
    if canon in INT_FLAGS:
        return int
    if canon in FLOAT_FLAGS:
        return float
    if canon in ARRAY_FLAGS:
        return list
    if canon in SLICE_FLAGS:
        return "slice"
    return str


def _parse_bool(text: str, name: str) -> bool:
    t = text.lower()
    if t in ("1", "t", "true"):
        return True
    if t in ("0", "f", "false"):
        return False
    raise FlyError(f'invalid argument "{text}" for "{name}" flag: strconv.ParseBool: parsing "{text}": invalid syntax', usage=True)


class Opts(dict):
    """Parsed flags keyed by canonical long name without dashes; plus `.given`."""

    given: set

    def get1(self, name, default=None):
        return self.get(name, default)


def parse_flags(node: Node, tokens: list[str]) -> tuple[Opts, list[str]]:
    table = flag_table(node)
    opts = Opts()
    opts.given = set()
    for _name, (canon, typ) in table.items():
        key = canon[2:]
        if key in opts:
            continue
        if typ is bool:
            opts[key] = DEFAULTS.get(canon, False)
        elif typ in (list, "slice"):
            opts[key] = []
        else:
            opts[key] = None
    args: list[str] = []

    def setv(canon, typ, value, shown):
        key = canon[2:]
        opts.given.add(key)
        if typ is bool:
            opts[key] = _parse_bool(value, shown) if isinstance(value, str) else value
        elif typ is int:
            try:
                opts[key] = int(value)
            except ValueError:
                raise FlyError(f'invalid argument "{value}" for "{shown}" flag: strconv.ParseInt: parsing "{value}": invalid syntax', usage=True) from None
        elif typ is float:
            try:
                opts[key] = float(value)
            except ValueError:
                raise FlyError(f'invalid argument "{value}" for "{shown}" flag: strconv.ParseFloat: parsing "{value}": invalid syntax', usage=True) from None
        elif typ is list:
            opts[key].append(value)
        elif typ == "slice":
            opts[key].extend([v for v in value.split(",")] if value else [])
        else:
            opts[key] = value

    i = 0
    while i < len(tokens):
        tok = tokens[i]
        i += 1
        if tok == "--":
            args.extend(tokens[i:])
            break
        if tok.startswith("--") and len(tok) > 2:
            name, eq, value = tok.partition("=")
            if name not in table:
                raise FlyError(f"unknown flag: {name}", usage=True)
            canon, typ = table[name]
            if eq:
                setv(canon, typ, value, name)
            elif typ is bool:
                setv(canon, typ, True, name)
            elif canon in NO_OPT_DEFAULT:
                setv(canon, typ, NO_OPT_DEFAULT[canon], name)
            else:
                if i >= len(tokens):
                    raise FlyError(f"flag needs an argument: {name}", usage=True)
                setv(canon, typ, tokens[i], name)
                i += 1
        elif tok.startswith("-") and len(tok) > 1 and tok != "-":
            chars = tok[1:]
            j = 0
            while j < len(chars):
                c = chars[j]
                short = "-" + c
                if short not in table:
                    raise FlyError(f"unknown shorthand flag: '{c}' in {tok}", usage=True)
                canon, typ = table[short]
                rest = chars[j + 1 :]
                if typ is bool:
                    if rest.startswith("="):
                        setv(canon, typ, rest[1:], short)
                        break
                    setv(canon, typ, True, short)
                    j += 1
                    continue
                if rest:
                    setv(canon, typ, rest[1:] if rest.startswith("=") else rest, short)
                elif canon in NO_OPT_DEFAULT:
                    setv(canon, typ, NO_OPT_DEFAULT[canon], short)
                else:
                    if i >= len(tokens):
                        raise FlyError(f"flag needs an argument: '{c}' in {tok}", usage=True)
                    setv(canon, typ, tokens[i], short)
                    i += 1
                break
        else:
            args.append(tok)
    return opts, args


def find_command(argv: list[str]) -> tuple[Node, list[str]]:
    node = TREE
    rest: list[str] = []
    i = 0
    descending = True
    while i < len(argv):
        tok = argv[i]
        i += 1
        if tok == "--":
            rest.append(tok)
            rest.extend(argv[i:])
            break
        if tok.startswith("-") and len(tok) > 1:
            rest.append(tok)
            if "=" not in tok:
                canon = flag_table(node).get(tok.split("=")[0], (tok, None))[0]
                takes_value = canon not in BOOL_FLAGS and canon not in NO_OPT_DEFAULT
                if tok.startswith("--") and takes_value and i < len(argv) and descending:
                    if tok in flag_table(node) or True:
                        rest.append(argv[i])
                        i += 1
                elif not tok.startswith("--") and len(tok) == 2 and takes_value and i < len(argv) and descending:
                    rest.append(argv[i])
                    i += 1
            continue
        if descending:
            c = node.child(tok)
            if c is not None:
                node = c
                continue
            descending = False
        rest.append(tok)
    return node, rest


def usage_text(node: Node) -> str:
    path = " ".join((PROG,) + node.path)
    pos = node.spec.get("positional", "") if node.spec else ""
    lines = ["Usage:"]
    if node.runnable:
        lines.append(f"  {path} [flags]" if not pos or pos == "none" else f"  {path} {pos.split(' (')[0]} [flags]")
    if node.children:
        lines.append(f"  {path} [command]")
        lines.append("")
        lines.append("Available Commands:")
        for name in sorted(node.children):
            lines.append(f"  {name}")
    if node.aliases:
        lines += ["", "Aliases:", "  " + ", ".join([node.name] + node.aliases)]
    flags = node.spec.get("flags", []) if node.spec else []
    if flags:
        lines += ["", "Flags:"]
        longs = [f for f in flags if f.startswith("--")]
        for f in longs:
            lines.append(f"      {f}")
    lines += ["", "Global Flags:", "  -t, --access-token string   Fly API Access Token",
              "      --debug                 Print additional logs and traces",
              "      --verbose               Verbose output"]
    if node.children:
        lines += ["", f'Use "{path} [command] --help" for more information about a command.']
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ mutating commands

MUTATING = {
    ("apps", "create"), ("apps", "destroy"), ("deploy",), ("scale", "count"),
    ("volumes", "create"), ("volumes", "extend"), ("volumes", "destroy"),
    ("secrets", "set"), ("secrets", "unset"), ("secrets", "import"), ("secrets", "deploy"),
    ("secrets", "sync"), ("postgres", "create"), ("postgres", "attach"),
    ("machine", "run"), ("machine", "create"), ("machine", "destroy"), ("machine", "stop"),
    ("machine", "start"), ("storage", "create"), ("storage", "destroy"),
    ("mpg", "create"), ("mpg", "attach"), ("mpg", "destroy"), ("mpg", "backup", "create"), ("mpg", "restore"),
}
NO_AUTH = {(), ("version",)}


def fakefly_home() -> Path:
    home = os.environ.get("FAKEFLY_HOME")
    if not home:
        sys.stderr.write("Error: fakefly: FAKEFLY_HOME is not set (the stand-in needs a state directory)\n")
        sys.stderr.flush()
        os._exit(2)
    p = Path(home)
    p.mkdir(parents=True, exist_ok=True)
    return p


def _ms(name: str) -> float:
    try:
        return max(0.0, float(os.environ.get(name, "0") or 0)) / 1000.0
    except ValueError:
        return 0.0


def log_call(home: Path, argv: list[str], started: float, mutating: bool, rc: int) -> None:
    rec = {"argv": argv, "t": started, "pid": os.getpid(), "mutating": mutating,
           "exit": rc, "duration": round(time.time() - started, 6)}
    line = json.dumps(rec) + "\n"
    fd = os.open(home / "argv.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def record_event(home: Path, event: dict) -> None:
    event = dict(event)
    event.setdefault("t", time.time())
    fd = os.open(home / "events.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps(event) + "\n").encode())
    finally:
        os.close(fd)


def check_injection(home: Path, argv: list[str]) -> None:
    fail_at = os.environ.get("FAKEFLY_FAIL_AT", "").strip()
    pattern = os.environ.get("FAKEFLY_FAIL_MATCH", "")
    with S.mutate(home) as st:
        st["counters"]["mutations"] = n = st["counters"].get("mutations", 0) + 1
    hit = False
    if fail_at:
        try:
            hit = n == int(fail_at)
        except ValueError:
            pass
    if pattern and re.search(pattern, " ".join(argv)):
        hit = True
    if hit:
        raise FlyError(
            "server returned a non-200 status code: 500 "
            f"(Request ID: 01FAKEFLY{n:06d}-iad) [fakefly: injected failure of mutating call #{n}]"
        )


def has_token(opts) -> bool:
    return bool(opts.get("access-token") or os.environ.get("FLY_ACCESS_TOKEN") or os.environ.get("FLY_API_TOKEN"))


def current_token(opts) -> str:
    """-t beats FLY_ACCESS_TOKEN beats FLY_API_TOKEN (reference §0.1); a scheme prefix is dropped."""
    tok = opts.get("access-token") or os.environ.get("FLY_ACCESS_TOKEN") or os.environ.get("FLY_API_TOKEN") or ""
    for prefix in ("FlyV1 ", "Bearer "):
        if tok.startswith(prefix):
            tok = tok[len(prefix):]
    return tok


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    started = time.time()
    home = fakefly_home()
    from . import flyconfig

    flyconfig.start()  # flyctl/flyctl.go initViper: config.yml is read once, at start-up
    node, rest = find_command(argv)
    rc = 1
    try:
        rc = _run(home, node, rest, argv)
    except Exit as e:
        rc = e.code
    except FlyError as e:
        sys.stdout.flush()
        sys.stderr.write(f"Error: {e.message}\n")
        for line in e.extra:
            sys.stderr.write(line + "\n")
        if e.usage:
            sys.stdout.write(usage_text(node))
        rc = e.code
    except GoPanic as e:
        sys.stdout.write(f"Oops, something went wrong! Could you try that again?\n\n{e}\ngoroutine 1 [running]:\n"
                         "github.com/superfly/flyctl/internal/command/secrets.parseSecrets(...)\n")
        rc = 3
    except KeyboardInterrupt:
        rc = 127
    except Exception as e:  # a bug in the stand-in: say so loudly, like a Go panic
        import traceback
        traceback.print_exc()
        sys.stderr.write(f"Error: fakefly internal error: {e!r}\n")
        rc = 3
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        log_call(home, argv, started, node.path in MUTATING, rc)
    return rc


def _run(home: Path, node: Node, rest: list[str], argv: list[str]) -> int:
    from . import commands

    latency = _ms("FAKEFLY_LATENCY_MS")
    if node.path == ("deploy",):
        latency += _ms("FAKEFLY_DEPLOY_LATENCY_MS")
    if latency:
        time.sleep(latency)

    if node is TREE:
        positional = [t for t in rest if not t.startswith("-")]
        if positional:
            sys.stderr.write(f'Error: unknown command "{positional[0]}" for "{PROG}"\n')
            sys.stdout.write(f"Run '{PROG} --help' for usage.\n")
            return 1
    opts, args = parse_flags(node, rest)
    if opts.get("help"):
        sys.stdout.write(usage_text(node))
        return 0
    if node is TREE:
        if opts.get("version"):
            return commands.cmd_version(home, opts, args)
        sys.stdout.write(usage_text(node))
        return 0
    if not node.runnable:
        sys.stdout.write(usage_text(node))
        return 0
    if os.environ.get("FLY_JSON", "").lower() in ("1", "true") and "json" in opts:
        opts["json"] = True
    handler = commands.HANDLERS.get(node.path)
    if handler is None:
        raise FlyError(f"fakefly: `{' '.join(node.path)}` is not implemented by the flyctl stand-in")
    if node.path not in NO_AUTH and not has_token(opts):
        raise FlyError("no access token available. Please login with 'flyctl auth login'")
    if node.path not in NO_AUTH:
        from . import tokens

        tokens.authorize(home, node.path, opts, args)
    if node.path in MUTATING:
        check_injection(home, argv)
    return handler(home, opts, args) or 0
