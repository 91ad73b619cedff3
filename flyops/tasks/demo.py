"""demo: the repository's main job on a new machine, on embedded defaults."""

from __future__ import annotations

from flyops.present import console
from flyops.tasks.base import root, task
from flyops.tasks.dr import show_drill
from flyops.units import format_duration


@task(
    help={
        "keep_repo": "keep the demo's backup repository in var/demo/ (default: removed)",
        "json": "print the drill's JSON report on stdout",
    }
)
def demo(ctx, keep_repo=False, json=False):
    """The main job on a new machine: seed a throwaway PostgreSQL, back it up, run a drill, print the report."""
    from flyops.db.demo import run_demo

    out = console(stderr=True)
    result = run_demo(root(), keep_repo=keep_repo, say=lambda line: out.print(line, markup=False))
    show_drill(result, json)
    if not json:
        rto = format_duration(result.rto_measured) if result.rto_measured is not None else "not measured"
        out.print(f"demo: measured RTO {rto}; both throwaway servers and the repository were removed. The reports "
                  "stay in var/drills/demo/. Next: cp env/local.env.example env/local.env for your own database.")
    result.raise_for_outcome()
