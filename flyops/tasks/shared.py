"""What several task modules share: option help, option parsing, the host a pipeline runs on,
and how a dry run's plan is printed. Defined once here, used by db.*, dr.*, schedule.*."""

from __future__ import annotations

from flyops.errors import BadInput
from flyops.present import console, print_json
from flyops.units import parse_duration


def host_for(on: str | None, ssh_key: str | None = None):
    from flyops.db.hosts import LocalHost, SshHost

    return SshHost.parse(on, key_filename=ssh_key) if on else LocalHost()


def progress_line(title: str, host, quiet: bool):
    """Phases and bytes on a terminal's stderr (flyops.progress); nothing with --json or
    without a TTY. The host's scripts report through `host.progress`."""
    from flyops.progress import ProgressLine, wanted

    line = ProgressLine(title, enabled=wanted(quiet))
    if line.enabled:
        host.progress = line
    return line.shown()


def is_dry(ctx) -> bool:
    """Invoke's global --dry (`inv --dry db.backup ...`)."""
    return bool(getattr(ctx.config.run, "dry", False))


def show_plan(plan: dict, as_json: bool) -> None:
    """Print a dry run's plan (flyops.db.plans): nothing was done."""
    if as_json:
        print_json(plan)
        return
    out = console()
    out.print(f"[dry] {plan['task']} --env {plan['env']}: nothing is done; the plan:", markup=False)
    for i, step in enumerate(plan["steps"], start=1):
        out.print(f"  {i}. {step}", markup=False, soft_wrap=True)


def seconds(option: str, text: str | None, default: str | None = None) -> float | None:
    """A duration option (`30m`, `26h`) in seconds, else its default; BadInput naming the option."""
    text = text if text is not None else default
    if text is None:
        return None
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise BadInput(f"{option}: {exc}") from None
