"""ci.*: GitHub Actions workflows for the Rails app's repository."""

from __future__ import annotations

from pathlib import Path

from flyops.errors import BadInput
from flyops.fly.ci import default_out_dir, parse_deploys
from flyops.fly.ci import workflows as build_workflows
from flyops.present import console, print_json
from flyops.tasks.base import root, runner_for, task


@task(
    help={
        "ops_repo": "OWNER/NAME of this repository, when it is not the app's own (CI checks both out)",
        "deploys": "BRANCH:ENV pairs (default: staging:staging,main:production)",
        "backup_env": "environment whose backup runs hourly (default: production; '' for none)",
        "out": "folder to write to (default: <project.source>/.github/workflows)",
        "check": "write nothing; exit 7 when the files on disk differ",
        "json": "print JSON: each file and whether it is written, updated, unchanged or stale",
    },
)
def workflows(ctx, ops_repo=None, deploys=None, backup_env="production", out=None, check=False, json=False):
    """Write deploy-on-push and hourly-backup GitHub Actions workflows that call these tasks (`inv --dry`: print only)."""
    from flyops.errors import ChangesPending

    pairs = parse_deploys(deploys)
    files = build_workflows(root(), ops_repo=ops_repo, deploys=pairs, backup_env=backup_env)
    folder = Path(out) if out else default_out_dir(root(), pairs[0][1])
    if not out and not check and not folder.parent.parent.is_dir():
        # the app's checkout (project.source) is missing: writing would create a stray folder
        raise BadInput(f"the app folder {folder.parent.parent} does not exist (project.source in fly/stack.toml)",
                       fix="clone the app there, set project.source to where it is, or pass --out FOLDER")
    stale, report = [], {}
    writer = runner_for(ctx)
    for name, text in files.items():
        path = folder / name
        old = path.read_text(encoding="utf-8") if path.exists() else None
        if old == text:
            report[str(path)] = "unchanged"
            continue
        stale.append(str(path))
        report[str(path)] = "stale" if check else "written" if old is None else "updated"
        if not check:
            state = writer.write_text(path, text)
            report[str(path)] = state + (" (dry run: not written)" if writer.dry else "")
    if json:
        print_json({"folder": str(folder), "files": report, "dry": writer.dry})
    else:
        for path, state in report.items():
            console().print(f"{path}: {state}")
    if check and stale:
        raise ChangesPending(f"workflows differ from what the stack generates: {', '.join(stale)}",
                             fix="inv ci.workflows, then commit them in the app's repository")
