"""Pure builders for every flyctl call this repository makes.

Each returns a `Call`: the argv after the binary, whether it changes anything on Fly
(`--dry` prints those instead of running them), and an optional Secret for stdin. Nothing
here runs a process; `flyops.fly.flyctl.runner.FlyRunner` does. Flag names follow
flyctl.md and flyctl_flags.json; output is always asked for as `--json` where flyctl has it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from flyops.secret import Secret


@dataclass(frozen=True)
class Call:
    args: tuple[str, ...]
    mutating: bool
    stdin: Secret | None = field(default=None, repr=False)
    json: bool = False
    cwd: Path | None = None
    #: the flyctl process rewrites `app_secrets_minvers` in its config.yml from the snapshot it
    #: read at start-up (internal/appsecrets/minvers.go `setMinvers`, called by appsecrets.Update
    #: and DeleteMinvers): the runner never runs two of these at once against one config dir
    writes_fly_config: bool = False

    def __post_init__(self) -> None:
        for a in self.args:
            if not isinstance(a, str):
                raise TypeError(f"flyctl argument {a!r} is not a str (a Secret never goes in argv)")


def _read(*args: str) -> Call:
    return Call(tuple(args), mutating=False, json="--json" in args)


def _write(*args: str, stdin: Secret | None = None, cwd: Path | None = None, config: bool = False) -> Call:
    return Call(tuple(args), mutating=True, stdin=stdin, json="--json" in args, cwd=cwd, writes_fly_config=config)


# --- apps ------------------------------------------------------------------------------


def apps_list(org: str) -> Call:
    return _read("apps", "list", "--org", org, "--json")


def apps_create(app: str, org: str) -> Call:
    return _write("apps", "create", app, "--org", org, "--json")


def apps_destroy(app: str) -> Call:
    return _write("apps", "destroy", app, "--yes", config=True)  # apps/destroy.go: DeleteMinvers


def status(app: str) -> Call:
    return _read("status", "--app", app, "--json")


def machine_list(app: str) -> Call:
    return _read("machine", "list", "--app", app, "--json")


def releases(app: str) -> Call:
    return _read("releases", "--app", app, "--json")


# --- volumes ---------------------------------------------------------------------------


def volumes_list(app: str) -> Call:
    return _read("volumes", "list", "--app", app, "--json")


def volumes_create(app: str, name: str, region: str, size_gb: int) -> Call:
    # --yes: skip the "volumes are pinned to a host" confirmation, which fails non-interactively
    return _write(
        "volumes", "create", name, "--app", app, "--region", region, "--size", str(size_gb), "--yes", "--json"
    )


def volumes_extend(app: str, volume_id: str, size_gb: int) -> Call:
    return _write("volumes", "extend", volume_id, "--app", app, "--size", str(size_gb), "--yes", "--json")


# --- secrets ---------------------------------------------------------------------------


def secrets_list(app: str) -> Call:
    return _read("secrets", "list", "--app", app, "--json")


def secrets_import(app: str, payload: Secret, *, stage: bool) -> Call:
    """Values travel on stdin only; `--stage` defers the restart to the next deploy."""
    args = ["secrets", "import", "--app", app]
    if stage:
        args.append("--stage")
    return _write(*args, stdin=payload, config=True)  # appsecrets.Update -> SetMinvers


def secrets_unset(app: str, names: list[str], *, stage: bool) -> Call:
    args = ["secrets", "unset", *names, "--app", app]
    if stage:
        args.append("--stage")
    return _write(*args, config=True)  # appsecrets.Update -> SetMinvers


def secrets_deploy(app: str) -> Call:
    return _write("secrets", "deploy", "--app", app)


# --- deploy ----------------------------------------------------------------------------


def deploy(
    app: str,
    config: Path,
    *,
    workdir: Path | None = None,
    image: str | None = None,
    strategy: str | None = None,
    wait_timeout: str | None = None,
) -> Call:
    """`fly deploy` with an absolute --config (a positional WORKING_DIRECTORY is chdir'ed
    into first, so a relative --config would resolve from there; flyctl.md §3).

    --ha=false: how many machines run where is the stack's placement (flyops/placement.py),
    not flyctl's default for a new group (2 with services, 1 + a standby without:
    machines_deploymachinesapp.go deployCreateMachinesForGroups), which would only be
    created to be scaled away. Existing machines, standbys included, are updated either way."""
    if not Path(config).is_absolute():
        raise ValueError(f"deploy needs an absolute --config path, got {config}")
    args: list[str] = ["deploy"]
    if workdir is not None and image is None:
        args.append(str(Path(workdir).resolve()))
    args += ["--config", str(config), "--app", app, "--yes"]
    if image:
        args += ["--image", image]
    else:
        args.append("--remote-only")
    if strategy:
        args += ["--strategy", strategy]
    if wait_timeout:
        args += ["--wait-timeout", wait_timeout]
    args.append("--ha=false")
    return _write(*args)


def scale_count(app: str, count: int, regions: list[str], *, max_per_region: int | None = None,
                process_group: str | None = None) -> Call:
    """COUNT is the total over --region (scale/count_machines.go convergeGroupCounts); with
    --max-per-region M and COUNT = M x regions every listed region ends with exactly M."""
    args = ["scale", "count", str(count), "--region", ",".join(regions)]
    if max_per_region is not None:
        args += ["--max-per-region", str(max_per_region)]
    if process_group:
        args += ["--process-group", process_group]
    return _write(*args, "--app", app, "--yes")


# --- postgres --------------------------------------------------------------------------


def postgres_list() -> Call:
    return _read("postgres", "list", "--json")


def postgres_create(
    name: str, org: str, region: str, *, cluster_size: int, vm_size: str, volume_size_gb: int,
    image_ref: str | None = None, detach: bool = False, enable_backups: bool = False,
) -> Call:
    """Non-interactive: all three of size, VM and volume skip the configuration picker (§9).
    No --password: flyctl generates one and prints it; a password never goes into argv.
    `detach`: skip flyctl's health watch, after which (and only after which) it prints the
    password (flypg/launcher.go LaunchMachinesPostgres); the caller then waits by itself."""
    args = [
        "postgres", "create", "--name", name, "--org", org, "--region", region,
        "--initial-cluster-size", str(cluster_size), "--vm-size", vm_size,
        "--volume-size", str(volume_size_gb),
    ]
    if detach:
        args.append("--detach")
    if enable_backups:  # create.go: a Tigris bucket and WAL archiving (flypg/tigris.go CreateTigrisBucket)
        args.append("--enable-backups")
    if image_ref:
        args += ["--image-ref", image_ref]
    return _write(*args, config=True)  # flypg/launcher.go setSecrets -> appsecrets.Update


def postgres_attach(pg_app: str, app: str, database_name: str) -> Call:
    return _write("postgres", "attach", pg_app, "--app", app, "--database-name", database_name, "--yes",
                  config=True)  # postgres/attach.go runAttachCluster -> appsecrets.Update


# --- machines --------------------------------------------------------------------------

#: `--schedule` values `fly machine run` accepts (flyctl.md §14: no cron syntax).
MACHINE_SCHEDULES = ("hourly", "daily", "weekly", "monthly")
#: `--restart` values `fly machine run` accepts.
MACHINE_RESTART_POLICIES = ("no", "always", "on-failure")


def machine_run(
    image: str,
    *,
    app: str,
    region: str,
    name: str,
    schedule: str | None = None,
    restart: str | None = None,
    env: dict[str, str] | None = None,
    metadata: dict[str, str] | None = None,
    vm_size: str | None = None,
    vm_memory: str | None = None,
) -> Call:
    """`fly machine run IMAGE --app A ...` (§14). It has no --yes and cannot create an app
    non-interactively, so the app must exist first. `env` values are plain configuration,
    never secrets (those are app secrets, set with secrets_import)."""
    from flyops.errors import BadInput

    if schedule is not None and schedule not in MACHINE_SCHEDULES:
        raise BadInput(f"schedule {schedule!r} is not one `fly machine run` accepts",
                       fix="use one of: " + ", ".join(MACHINE_SCHEDULES) + " (no cron syntax)")
    if restart is not None and restart not in MACHINE_RESTART_POLICIES:
        raise BadInput(f"restart policy {restart!r} is not one `fly machine run` accepts",
                       fix="use one of: " + ", ".join(MACHINE_RESTART_POLICIES))
    if not image or image.startswith((".", "/")):  # flyctl would build from the working directory
        raise BadInput(f"image {image!r} must be a registry reference, e.g. registry.fly.io/APP:TAG")
    args = ["machine", "run", image, "--app", app, "--region", region, "--name", name]
    if schedule:
        args += ["--schedule", schedule]
    if restart:
        args += ["--restart", restart]
    if vm_size:
        args += ["--vm-size", vm_size]
    if vm_memory:
        args += ["--vm-memory", vm_memory]
    for key, value in (env or {}).items():
        args += ["--env", f"{key}={value}"]
    for key, value in (metadata or {}).items():
        args += ["--metadata", f"{key}={value}"]
    return _write(*args)


# --- access ----------------------------------------------------------------------------


def proxy(app: str, local_port: int, remote_port: int, host: str | None = None) -> Call:
    """A long-running tunnel; the runner starts it in the background and waits for
    `Proxying localhost:<port> to remote [...]` on stdout (§7)."""
    args = ["proxy", f"{local_port}:{remote_port}"]
    if host:
        args.append(host)
    args += ["--app", app, "--quiet"]
    return Call(tuple(args), mutating=False)


def ssh_command(app: str, command: str, *, machine: str | None = None) -> Call:
    args = ["ssh", "console", "--app", app, "--command", command]
    if machine:
        args += ["--machine", machine]
    return _read(*args)


def config_validate(config: Path) -> Call:
    return _read("config", "validate", "--config", str(config))


# --- deploy pipeline ---------------------------------------------------------------------


def image_check(app: str, config: Path, image: str) -> Call:
    """Resolve `image` without releasing anything: with `--image`, `fly deploy --build-only`
    looks the reference up and returns before a release is made (flyctl.md §3), so a missing
    image fails here, before any app of the environment is touched. It changes nothing on
    Fly, so it is a read (it also runs under --dry)."""
    if not Path(config).is_absolute():
        raise ValueError(f"deploy needs an absolute --config path, got {config}")
    return _read("deploy", "--config", str(config), "--app", app, "--image", image, "--build-only", "--yes")


def redeploy_image(app: str, config: Path, image: str) -> Call:
    """Roll back: redeploy an earlier release's image. The release command is skipped: the
    old image's `db:migrate` would not undo a migration, it would only run again."""
    return _write(*deploy(app, config, image=image).args, "--skip-release-command")


def machine_create(app: str, image: str, *, region: str, name: str, metadata: dict[str, str]) -> Call:
    """A machine that is created and never started (flyctl.md §14): a record whose
    `config.metadata` anyone with access to the org reads back with `machine list --json`."""
    args = ["machine", "create", "--app", app, "--region", region, "--name", name]
    for key, value in metadata.items():
        args += ["--metadata", f"{key}={value}"]
    args.append(image)
    return _write(*args)


def machine_destroy(app: str, machine_id: str) -> Call:
    # --force: a created-but-never-started machine is not "stopped", so destroy needs it (§14)
    return _write("machine", "destroy", machine_id, "--app", app, "--force")


