"""The house rules of docs/ARCHITECTURE.md, checked on the source itself.

* no import cycle between flyops modules (imports inside functions count: they are how a cycle
  hides);
* only the runner (`flyops.fly.flyctl.runner`) and the hosts (`flyops.db.hosts`) start processes:
  no other module imports `sh` or `subprocess`, or calls `os.system`/`os.exec*`/`os.spawn*`/
  `os.fork`/`os.popen`;
* no public name defined at the top level of two modules (one copy of every helper and model);
* the layers: the core (`flyops/*.py`) imports no package above it, the stack imports neither the
  Fly side nor the tasks, the Fly side and the database side never import the tasks.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "flyops"
PROCESS_STARTERS = {"flyops.fly.flyctl.runner", "flyops.db.hosts"}
#: a name two modules may both define because it means something different in each and is
#: never imported from both (kept short on purpose: each entry says why)
SAME_NAME_ALLOWED: set[str] = set()
#: task modules name their functions after the task (`backup`, `status`), and the flyctl
#: builders after flyctl's commands (`deploy`, `status`): both mirror a name, they do not copy code
NAME_CHECK_SKIPS = ("flyops.tasks.", "flyops.fly.flyctl.commands")


def modules() -> dict[str, ast.Module]:
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT.parent).with_suffix("")
        name = ".".join(rel.parts)
        name = name.removesuffix(".__init__")
        out[name] = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return out


def imports_of(name: str, tree: ast.Module, known: set[str]) -> set[str]:
    found = set()
    package = name if name in known and (ROOT.parent / name.replace(".", "/") / "__init__.py").exists() else \
        name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                found.add(a.name)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            for a in node.names:
                found.add(f"{base}.{a.name}" if f"{base}.{a.name}" in known else base)
    return {m for m in found if m in known and m != name}


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {n: imports_of(n, t, known) for n, t in mods.items()}


def find_cycle(g: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(g.get(n, ())):
            if m == "flyops" or (n.startswith(m + ".")):  # a package's __init__ is not a dependency
                continue
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if state.get(m) is None:
                found = visit(m)
                if found:
                    return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(g):
        if state.get(n) is None:
            found = visit(n)
            if found:
                return found
    return None


def test_the_checker_finds_a_cycle_and_a_clean_graph_has_none():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycle():
    cycle = find_cycle(graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def _starts_processes(tree: ast.Module) -> list[str]:
    bad = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            bad += [a.name for a in node.names if a.name.split(".")[0] in ("sh", "subprocess", "pty")]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in ("sh", "subprocess", "pty") \
                and not node.level:
            bad.append(node.module or "")
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "os" and (
                node.attr in ("system", "popen", "fork", "forkpty") or node.attr.startswith(("exec", "spawn", "posix_spawn"))):
            bad.append(f"os.{node.attr}")
    return bad


def test_the_process_check_sees_sh_and_subprocess():
    assert _starts_processes(ast.parse("import sh\nfrom subprocess import run\nos.execvp('x', [])"))


def test_only_the_runner_and_the_hosts_start_processes():
    offenders = {n: _starts_processes(t) for n, t in modules().items() if n not in PROCESS_STARTERS}
    offenders = {n: v for n, v in offenders.items() if v}
    assert not offenders, f"start processes outside the runner and the hosts: {offenders}"


def test_no_public_name_is_defined_in_two_modules():
    where: dict[str, list[str]] = defaultdict(list)
    for name, tree in modules().items():
        if name.startswith(NAME_CHECK_SKIPS):
            continue
        for node in tree.body:
            names = []
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names = [node.name]
            elif isinstance(node, ast.Assign):
                names = [t.id for t in node.targets if isinstance(t, ast.Name)]
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                names = [node.target.id]
            for n in names:
                if not n.startswith("_") and n not in ("__all__",) and n not in SAME_NAME_ALLOWED:
                    where[n].append(name)
    twice = {n: ms for n, ms in where.items() if len(ms) > 1}
    assert not twice, f"defined in more than one module: {twice}"


LAYERS = [  # (modules starting with, may not import modules starting with)
    ("flyops.stack", ("flyops.fly", "flyops.tasks")),
    ("flyops.fly", ("flyops.tasks",)),
    ("flyops.db", ("flyops.tasks",)),
]
CORE = {"flyops.errors", "flyops.secret", "flyops.logs", "flyops.present", "flyops.progress", "flyops.procs",
        "flyops.toolpath", "flyops.units"}


def test_layers():
    g = graph()
    bad = []
    for n, deps in g.items():
        for prefix, forbidden in LAYERS:
            if n.startswith(prefix):
                bad += [f"{n} -> {d}" for d in deps if d.startswith(forbidden)]
        if n in CORE:
            bad += [f"{n} -> {d}" for d in deps if d not in CORE]
    assert not bad, "layer rule broken: " + "; ".join(sorted(bad))


def test_every_data_file_of_the_package_is_declared_package_data():
    """What the code reads next to itself (store image templates, the sample SQL) must travel with
    the package: each non-Python file under flyops/ matches a pyproject package-data pattern."""
    import fnmatch
    import tomllib

    patterns = tomllib.loads((ROOT.parent / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["flyops"]
    data = [p.relative_to(ROOT).as_posix() for p in ROOT.rglob("*")
            if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts]
    assert data, "the store image templates and the sample SQL are package data"
    missing = [d for d in data if not any(fnmatch.fnmatch(d, pat) or fnmatch.fnmatch(d.split("/")[-1], pat.split("/")[-1])
                                          for pat in patterns)]
    assert not missing, f"not declared as package data in pyproject.toml: {missing}"
