"""When backups, prunes and drills run: crontab lines, systemd units, a scheduled Fly Machine.

Pure builders: every function returns text or argv lists and runs nothing. flyctl argv are
the words after the `fly` binary, as `flyops.fly.flyctl.commands.Call.args` has them. The tasks
`schedule.show` (prints `crontab_lines` / `systemd_units`) and `schedule.fly` (runs the argv
from `fly_runner_calls` through the one flyctl runner) sit on top.

The jobs, all in UTC:

* backup, hourly: `inv db.backup --env E --if-older-than 20h`. The task itself skips when
  the last *successful* backup is younger than the window, so an hourly trigger heals a
  missed night without taking 24 backups a day (postgres-flex's "due since last success").
* prune, daily: `inv db.prune --env E --yes` (prune is a dry run without `--yes`).
* drill, weekly: `inv dr.drill --env E`.

No `flock` around the commands: the tasks take their own locks (advisory lock + restic
lock) and exit 4 when busy, which cron records in the log instead of queuing a second run.

The Fly token (needed when the database is on Fly: `fly proxy`, see README "Which Fly
token") never goes into argv or a unit file: the crontab sets `FLY_API_TOKEN_FILE` to a
chmod-600 file, the systemd service loads that file as the credential `fly-api-token`
(`LoadCredential=`, readable only by the service as `$CREDENTIALS_DIRECTORY/fly-api-token`),
and the flyctl runner reads either (flyops/flyctl/runner.py `token_from_file`). A deploy token
of the database app is enough. The scheduled Fly Machine needs none: it connects `--direct`.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path

from flyops.errors import BadInput
from flyops.fly.flyctl import commands as fly
from flyops.fly.flyctl.commands import Call
from flyops.secret import Secret

_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


@dataclass(frozen=True)
class Job:
    """One scheduled job: a name, the `inv` arguments, and when it runs (UTC)."""

    name: str  # backup | prune | drill
    inv_args: tuple[str, ...]  # after `inv`
    minute: int
    hour: int | None = None  # None = every hour
    weekday: int | None = None  # 0 = Monday .. 6 = Sunday; None = every day

    def cron_fields(self) -> str:
        hour = "*" if self.hour is None else str(self.hour)
        # cron numbers Sunday 0 (and 7); ours is Monday 0
        dow = "*" if self.weekday is None else str((self.weekday + 1) % 7)
        return f"{self.minute} {hour} * * {dow}"

    def on_calendar(self) -> str:
        hour = "*" if self.hour is None else f"{self.hour:02d}"
        day = "" if self.weekday is None else _WEEKDAYS[self.weekday] + " "
        return f"{day}*-*-* {hour}:{self.minute:02d}:00 UTC"


@dataclass(frozen=True)
class Schedule:
    """Where the repository and its virtualenv are, and which jobs run for one environment.

    `repo` and `venv` must be absolute: cron and systemd start from `/` with a bare PATH.
    """

    repo: Path
    venv: Path
    env: str
    log_dir: Path | None = None  # default <repo>/var/log
    if_older_than: str = "20h"
    backup_minute: int = 17  # off the hour, so a fleet does not hit the store at :00
    prune_at: tuple[int, int] = (3, 41)  # (hour, minute) UTC
    drill_at: tuple[int, int, int] = (6, 4, 23)  # (weekday Mon=0, hour, minute): Sunday 04:23 UTC
    jobs_override: tuple[Job, ...] = field(default=())
    fly_token_file: Path | None = None  # default <repo>/env/<env>.fly-token (git-ignored, chmod 600)

    def __post_init__(self):
        for name in ("repo", "venv"):
            value = Path(getattr(self, name))
            if not value.is_absolute():
                raise BadInput(f"schedule: {name} must be an absolute path (got {value})",
                               fix="pass the absolute path; cron and systemd do not start in the repository")
            object.__setattr__(self, name, value)
        if self.log_dir is not None and not Path(self.log_dir).is_absolute():
            raise BadInput(f"schedule: log_dir must be an absolute path (got {self.log_dir})")
        if self.fly_token_file is not None and not Path(self.fly_token_file).is_absolute():
            raise BadInput(f"schedule: the Fly token file must be an absolute path (got {self.fly_token_file})")
        if not self.env or not all(c.isalnum() or c in "-_" for c in self.env):
            raise BadInput(f"schedule: environment name {self.env!r} must be letters, digits, - or _")

    @property
    def inv(self) -> Path:
        return self.venv / "bin" / "inv"

    @property
    def token_file(self) -> Path:
        return Path(self.fly_token_file) if self.fly_token_file else self.repo / "env" / f"{self.env}.fly-token"

    @property
    def logs(self) -> Path:
        return Path(self.log_dir) if self.log_dir else self.repo / "var" / "log"

    def log_file(self, job: Job) -> Path:
        return self.logs / f"{job.name}-{self.env}.log"

    def jobs(self) -> tuple[Job, ...]:
        if self.jobs_override:
            return self.jobs_override
        return (
            Job("backup", ("db.backup", "--env", self.env, "--kind", "scheduled", "--if-older-than", self.if_older_than),
                minute=self.backup_minute),
            Job("prune", ("db.prune", "--env", self.env, "--yes"),
                minute=self.prune_at[1], hour=self.prune_at[0]),
            Job("drill", ("dr.drill", "--env", self.env),
                minute=self.drill_at[2], hour=self.drill_at[1], weekday=self.drill_at[0]),
        )

    def argv(self, job: Job) -> list[str]:
        return [str(self.inv), *job.inv_args]


def _cron_escape(text: str) -> str:
    # cron turns an unescaped % into a newline (stdin for the command)
    return text.replace("%", "\\%")


def crontab_lines(schedule: Schedule) -> list[str]:
    """Lines to append to a crontab (`crontab -e` or /etc/cron.d without the user column).

    `CRON_TZ=UTC` makes cronie/systemd-cron read the times as UTC; Debian's cron ignores it
    and uses the host clock, which on servers is UTC (the header says so). `TZ=UTC` is for
    the commands' own timestamps.
    """
    token = str(schedule.token_file)
    if any(c in token for c in '"\n'):  # % is special in the command field only
        raise BadInput(f"schedule: the Fly token file path {token!r} cannot be written in a crontab",
                       fix="choose a path without double quotes or newlines")
    lines = [
        f"# flyops schedule for {schedule.env}: times are UTC; generated by `inv schedule.show`",
        f"# the Fly token is read from {token} (chmod 600), never from the command line",
        "CRON_TZ=UTC",
        "TZ=UTC",
        "SHELL=/bin/sh",
        f'FLY_API_TOKEN_FILE="{token}"',
    ]
    for job in schedule.jobs():
        command = " ".join([
            "cd", shlex.quote(str(schedule.repo)), "&&",
            "mkdir", "-p", shlex.quote(str(schedule.logs)), "&&",
            shlex.join(schedule.argv(job)),
            ">>", shlex.quote(str(schedule.log_file(job))), "2>&1",
        ])
        lines.append(f"{job.cron_fields()} {_cron_escape(command)}")
    return lines


def _systemd_escape(text: str) -> str:
    # % starts a specifier in unit files
    return text.replace("%", "%%")


def _unit_name(schedule: Schedule, job: Job) -> str:
    return f"flyops-{job.name}-{schedule.env}"


def systemd_units(schedule: Schedule, *, user: str | None = None) -> dict[str, str]:
    """{file name: content} for a .service + .timer pair per job (install in /etc/systemd/system).

    `Persistent=true` runs a job missed while the host was down at the next boot;
    `StandardOutput=append:` needs systemd >= 240 (Debian 10+).
    """
    units: dict[str, str] = {}
    for job in schedule.jobs():
        name = _unit_name(schedule, job)
        log = _systemd_escape(str(schedule.log_file(job)))
        service = [
            "[Unit]",
            f"Description=flyops {job.name} for {schedule.env}",
            "Wants=network-online.target",
            "After=network-online.target",
            "",
            "[Service]",
            "Type=oneshot",
            f"WorkingDirectory={_systemd_escape(str(schedule.repo))}",
            "Environment=TZ=UTC",
            # the runner reads $CREDENTIALS_DIRECTORY/fly-api-token; systemd >= 247 (Debian 12: 252)
            f"LoadCredential=fly-api-token:{_systemd_escape(str(schedule.token_file))}",
            f"ExecStartPre=/bin/mkdir -p {_systemd_escape(shlex.quote(str(schedule.logs)))}",
            f"ExecStart={_systemd_escape(shlex.join(schedule.argv(job)))}",
            f"StandardOutput=append:{log}",
            f"StandardError=append:{log}",
        ]
        if user:
            service.append(f"User={user}")
        timer = [
            "[Unit]",
            f"Description=flyops {job.name} for {schedule.env} (UTC)",
            "",
            "[Timer]",
            f"OnCalendar={job.on_calendar()}",
            "Persistent=true",
            "RandomizedDelaySec=120",
            f"Unit={name}.service",
            "",
            "[Install]",
            "WantedBy=timers.target",
        ]
        units[f"{name}.service"] = "\n".join(service) + "\n"
        units[f"{name}.timer"] = "\n".join(timer) + "\n"
    return units


# -- the backup runner as a scheduled Fly Machine ---------------------------------------------

#: Keys the backup-runner app needs as Fly secrets (`fly secrets import`, values on stdin).
RUNNER_SECRET_KEYS: tuple[str, ...] = (
    "DATABASE_URL",  # direct (not PgBouncer) URL of the database, e.g. postgres://...flycast:5432/db
    "RESTIC_REPOSITORY",
    "RESTIC_PASSWORD",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
)
#: Optional keys: forwarded when the environment file has them.
RUNNER_OPTIONAL_SECRET_KEYS: tuple[str, ...] = (
    "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL_S3", "BACKUP_HEARTBEAT_URL", "BACKUP_FAILURE_WEBHOOK_URL",
)


def runner_secret_keys(available: set[str] | frozenset[str] | None = None) -> list[str]:
    """Which keys the runner app needs: the required ones plus the optional ones present in
    `available` (the environment file's keys). Names only, never values."""
    keys = list(RUNNER_SECRET_KEYS)
    if available is not None:
        keys += [k for k in RUNNER_OPTIONAL_SECRET_KEYS if k in available]
    return keys


def runner_app_name(env: str, prefix: str = "flyops-backup") -> str:
    return f"{prefix}-{env}"


def machine_run_call(
    image: str,
    *,
    app: str,
    region: str,
    env: str,
    schedule: str = "daily",
    if_older_than: str = "20h",
    restart: str | None = "on-failure",
    name: str | None = None,
    vm_memory: str = "512",
    vm_size: str | None = None,
) -> Call:
    """`fly machine run IMAGE --app A --region R --schedule daily ...` for the backup runner.

    The image's entrypoint runs `inv db.backup --env $FLYOPS_ENV --if-older-than $IF_OLDER_THAN`
    and then the prune; no command is passed, so no `--` is needed. `--restart on-failure` is
    what flyctl defaults to with `--schedule`, written out so `fly m status -d` matches the plan.
    Secrets are not passed here: they are app secrets (imported on stdin first).
    """
    return fly.machine_run(
        image, app=app, region=region, name=name or f"backup-runner-{env}", schedule=schedule, restart=restart,
        vm_size=vm_size, vm_memory=vm_memory,
        env={"FLYOPS_ENV": env, "IF_OLDER_THAN": if_older_than},
        metadata={"flyops_role": "backup-runner"},
    )


def fly_runner_calls(image: str, *, org: str, region: str, env: str, app: str | None = None,
                     available_keys: set[str] | None = None, schedule: str = "daily",
                     if_older_than: str = "20h", payload: Secret | None = None) -> list[dict]:
    """The ordered plan for `inv schedule.fly`: [{step, call, stdin_keys}].

    `stdin_keys` names the secrets the secrets step carries; `payload` is their encoded
    NAME=VALUE text (built by the task from the env file at the last moment), fed on stdin.
    `--stage`: the machine created afterwards picks them up; there is nothing to restart yet.
    """
    app = app or runner_app_name(env)
    return [
        {"step": "create the runner app", "call": fly.apps_create(app, org), "stdin_keys": []},
        {"step": "give it the backup secrets", "call": fly.secrets_import(app, payload or Secret(""), stage=True),
         "stdin_keys": runner_secret_keys(available_keys)},
        {"step": "start the scheduled machine",
         "call": machine_run_call(image, app=app, region=region, env=env, schedule=schedule,
                                  if_older_than=if_older_than),
         "stdin_keys": []},
    ]
