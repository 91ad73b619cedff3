"""Schedules: crontab lines parse, systemd units have timers, fly argv use only real flags."""

from __future__ import annotations

import configparser
import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from flyops.db.schedule import (
    RUNNER_SECRET_KEYS,
    Job,
    Schedule,
    crontab_lines,
    fly_runner_calls,
    machine_run_call,
    runner_secret_keys,
    systemd_units,
)
from flyops.errors import BadInput
from flyops.secret import Secret

ROOT = Path(__file__).resolve().parents[2]
FLAGS = json.loads((ROOT / "tests" / "fakefly" / "flags.json").read_text())
DOCKERFILE = ROOT / "backup-runner" / "Dockerfile"

CRON_FIELD = re.compile(r"^(\*|\d+(-\d+)?(,\d+(-\d+)?)*)(/\d+)?$")
RANGES = [(0, 59), (0, 23), (1, 31), (1, 12), (0, 7)]


def sched(**kw) -> Schedule:
    return Schedule(repo=Path("/srv/ops repo"), venv=Path("/srv/ops repo/.venv"), env="production", **kw)


def cron_entries(lines):
    return [ln for ln in lines if ln and not ln.startswith("#") and not re.match(r"^[A-Z_]+=", ln)]


def test_crontab_has_three_jobs_with_five_valid_fields_and_absolute_paths():
    lines = crontab_lines(sched())
    assert "CRON_TZ=UTC" in lines
    entries = cron_entries(lines)
    assert len(entries) == 3
    for entry in entries:
        fields = entry.split(None, 5)
        assert len(fields) == 6, entry
        for value, (lo, hi) in zip(fields[:5], RANGES, strict=True):
            assert CRON_FIELD.match(value), (value, entry)
            for n in re.findall(r"\d+", value):
                assert lo <= int(n) <= hi, (value, entry)
        cmd = shlex.split(fields[5])
        assert cmd[:2] == ["cd", "/srv/ops repo"]
        assert "/srv/ops repo/.venv/bin/inv" in cmd
        assert cmd[-3] == ">>" and cmd[-1] == "2>&1" and cmd[-2].startswith("/srv/ops repo/var/log/")
        assert "flock" not in cmd
    backup, prune, drill = entries
    assert backup.split()[:5] == ["17", "*", "*", "*", "*"]  # hourly
    assert "--if-older-than 20h" in backup and "db.backup --env production" in backup
    assert prune.split()[:5] == ["41", "3", "*", "*", "*"]  # daily
    assert "db.prune --env production --yes" in prune
    assert drill.split()[:5] == ["23", "4", "*", "*", "0"]  # weekly, Sunday
    assert "dr.drill --env production" in drill


def test_crontab_is_accepted_by_a_real_crontab_parser(tmp_path):
    crontab = shutil.which("crontab")
    if not crontab:
        pytest.skip("no crontab binary on this machine (package cron); field syntax is checked above")
    f = tmp_path / "cron"
    f.write_text("\n".join(crontab_lines(sched())) + "\n")
    # -T (test) exists in cronie only; Debian's crontab has no dry-run, so only check with cronie
    out = subprocess.run([crontab, "-T", str(f)], capture_output=True, text=True)
    if "invalid option" in out.stderr:
        pytest.skip("this crontab has no -T (test) option")
    assert out.returncode == 0, out.stderr


def test_percent_signs_are_escaped_for_cron_and_systemd():
    s = Schedule(repo=Path("/srv/100%ops"), venv=Path("/srv/100%ops/.venv"), env="staging")
    for entry in cron_entries(crontab_lines(s)):
        assert re.search(r"(?<!\\)%", entry) is None
    for text in systemd_units(s).values():
        assert re.search(r"(?<!%)%(?!%)", text) is None


def test_systemd_units_pair_each_service_with_a_utc_timer():
    units = systemd_units(sched(), user="deploy")
    assert sorted(units) == sorted(
        f"flyops-{j}-production.{kind}" for j in ("backup", "prune", "drill") for kind in ("service", "timer"))
    for name, text in units.items():
        cp = configparser.ConfigParser(interpolation=None, strict=True)
        cp.optionxform = str
        cp.read_string(text)
        if name.endswith(".timer"):
            cal = cp["Timer"]["OnCalendar"]
            assert cal.endswith(" UTC")
            assert cp["Timer"]["Persistent"] == "true"
            assert cp["Timer"]["Unit"] == name.replace(".timer", ".service")
        else:
            svc = cp["Service"]
            assert svc["Type"] == "oneshot"
            assert svc["WorkingDirectory"] == "/srv/ops repo"
            argv = shlex.split(svc["ExecStart"])
            assert argv[0] == "/srv/ops repo/.venv/bin/inv"
            assert svc["StandardOutput"].startswith("append:/srv/ops repo/var/log/")
            assert svc["User"] == "deploy"
    assert systemd_units(sched())["flyops-backup-production.timer"].count("OnCalendar=*-*-* *:17:00 UTC") == 1
    assert "OnCalendar=Sun *-*-* 04:23:00 UTC" in units["flyops-drill-production.timer"]
    assert "OnCalendar=*-*-* 03:41:00 UTC" in units["flyops-prune-production.timer"]


def test_systemd_calendar_is_accepted_by_systemd_analyze():
    tool = shutil.which("systemd-analyze")
    if not tool:
        pytest.skip("systemd-analyze not installed; OnCalendar syntax is checked by the test above")
    for job in sched().jobs():
        out = subprocess.run([tool, "calendar", job.on_calendar()], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr


def test_relative_paths_and_odd_env_names_are_refused():
    with pytest.raises(BadInput, match="repo must be an absolute path"):
        Schedule(repo=Path("ops"), venv=Path("/v"), env="production")
    with pytest.raises(BadInput, match="environment name"):
        Schedule(repo=Path("/r"), venv=Path("/v"), env="prod; rm -rf /")


def test_custom_jobs_replace_the_defaults():
    s = sched(jobs_override=(Job("backup", ("db.backup", "--env", "production"), minute=5, hour=2),))
    (entry,) = cron_entries(crontab_lines(s))
    assert entry.startswith("5 2 * * * ")


# -- fly machine run ---------------------------------------------------------------------------


def _machine_run_argv(*args, **kwargs) -> list[str]:
    return list(machine_run_call(*args, **kwargs).args)


def _flags_of(argv: list[str], n_words: int) -> list[str]:
    return [a.split("=", 1)[0] for a in argv[n_words:] if a.startswith("-")]


def test_machine_run_argv_is_exact_and_uses_only_known_flags():
    argv = _machine_run_argv("registry.fly.io/flyops-backup-production:pg16", app="flyops-backup-production",
                                region="fra", env="production")
    assert argv == [
        "machine", "run", "registry.fly.io/flyops-backup-production:pg16",
        "--app", "flyops-backup-production",
        "--region", "fra",
        "--name", "backup-runner-production",
        "--schedule", "daily",
        "--restart", "on-failure",
        "--vm-memory", "512",
        "--env", "FLYOPS_ENV=production",
        "--env", "IF_OLDER_THAN=20h",
        "--metadata", "flyops_role=backup-runner",
    ]
    spec = FLAGS["machine run"]
    known = set(spec["flags"])
    assert set(_flags_of(argv, 3)) <= known
    assert "--yes" not in argv  # machine run has no --yes
    i = argv.index("--schedule")
    assert argv[i + 1] in spec["allowed_values"]["--schedule"]
    i = argv.index("--restart")
    assert argv[i + 1] in spec["allowed_values"]["--restart"]


def test_every_schedule_value_and_vm_size_stay_within_the_flag_table():
    spec = FLAGS["machine run"]
    for value in spec["allowed_values"]["--schedule"]:
        argv = _machine_run_argv("img:1", app="a", region="fra", env="staging", schedule=value,
                                    vm_size="shared-cpu-1x", restart=None)
        assert set(_flags_of(argv, 3)) <= set(spec["flags"])
        assert "--restart" not in argv


def test_machine_run_refuses_what_flyctl_would_not_take():
    with pytest.raises(BadInput, match="no cron syntax"):
        _machine_run_argv("img:1", app="a", region="fra", env="p", schedule="0 3 * * *")
    with pytest.raises(BadInput, match="restart policy"):
        _machine_run_argv("img:1", app="a", region="fra", env="p", restart="sometimes")
    with pytest.raises(BadInput, match="registry reference"):
        _machine_run_argv("./backup-runner", app="a", region="fra", env="p")


def test_runner_app_is_created_first_and_gets_secret_names_only():
    calls = fly_runner_calls("img:1", org="acme", region="fra", env="production",
                             available_keys={"BACKUP_HEARTBEAT_URL", "UNRELATED"}, payload=Secret("RESTIC_PASSWORD=x\n"))
    assert [list(c["call"].args[:2]) for c in calls] == [["apps", "create"], ["secrets", "import"], ["machine", "run"]]
    assert calls[0]["call"].args == ("apps", "create", "flyops-backup-production", "--org", "acme", "--json")
    assert calls[1]["call"].args == ("secrets", "import", "--app", "flyops-backup-production", "--stage")
    assert calls[1]["call"].stdin.reveal() == "RESTIC_PASSWORD=x\n"
    assert calls[1]["stdin_keys"] == [*RUNNER_SECRET_KEYS, "BACKUP_HEARTBEAT_URL"]
    assert runner_secret_keys() == list(RUNNER_SECRET_KEYS)
    for c in calls:  # names never carry values
        assert not any("=" in a and a.split("=", 1)[0] in RUNNER_SECRET_KEYS for a in c["call"].args)


# -- backup-runner image ----------------------------------------------------------------------


def _dockerfile_stages(text: str) -> dict[str, list[str]]:
    """{stage name: [instructions]} with line continuations joined."""
    joined = re.sub(r"\\\n", " ", text)
    stages: dict[str, list[str]] = {}
    current = None
    for line in joined.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = re.match(r"FROM\s+(\S+)(?:\s+AS\s+(\S+))?", line, re.IGNORECASE)
        if m:
            current = m.group(2) or f"stage{len(stages)}"
            stages[current] = [line]
        elif current:
            stages[current].append(line)
    return stages


def test_dockerfile_stages_and_what_the_runner_relies_on():
    text = DOCKERFILE.read_text()
    assert "ARG DEBIAN_IMAGE=debian:bookworm-slim" in text
    stages = _dockerfile_stages(text)
    assert list(stages) == ["restic", "app", "runner"]
    # restic comes from Debian 13 (0.18), not bookworm's slow-hashing 0.14, unless overridden
    assert "ARG RESTIC_IMAGE=debian:trixie-slim" in text and stages["restic"][0] == "FROM ${RESTIC_IMAGE} AS restic"
    runner = "\n".join(stages["runner"])
    assert "ARG PG_MAJOR" in runner
    assert 'postgresql-client-${PG_MAJOR}' in runner
    # PGDG's suite is the base image's own Debian release, so DEBIAN_IMAGE=debian:trixie-slim works too
    assert "apt.postgresql.org" in runner and '$(. /etc/os-release && echo "$VERSION_CODENAME")-pgdg' in runner
    assert "COPY --from=restic /restic /usr/local/bin/restic" in runner
    assert "COPY --from=app /opt/flyops /opt/flyops" in runner
    assert "USER runner" in runner  # never root (pg tools, least privilege)
    assert re.search(r'ENTRYPOINT \[.*"/usr/local/bin/backup-runner"\]', runner)
    assert "sha256sum -c" in "\n".join(stages["restic"])
    # nothing from env/ (secrets) is ever copied into the image
    for instr in (i for s in stages.values() for i in s):
        if instr.upper().startswith("COPY") and "--from" not in instr:
            assert " env" not in instr and "var/" not in instr and ". ." not in instr, instr
    ignore = (DOCKERFILE.parent / "Dockerfile.dockerignore").read_text().splitlines()
    assert "*" in ignore and "env/" in ignore and not any(x.startswith("!env") for x in ignore)


def test_entrypoint_runs_backup_then_prune_and_never_echoes_values():
    script = (DOCKERFILE.parent / "entrypoint.sh").read_text()
    subprocess.run(["sh", "-n", str(DOCKERFILE.parent / "entrypoint.sh")], check=True)
    backup = script.index('inv db.backup --env "$FLYOPS_ENV" --kind scheduled --direct --if-older-than "$IF_OLDER_THAN"')
    prune = script.index('inv db.prune --env "$FLYOPS_ENV" --yes')
    assert backup < prune
    for key in RUNNER_SECRET_KEYS:
        assert key in script
    assert "set -x" not in script
    assert not re.search(r"echo[^\n]*\$value", script)


def test_dockerfile_builds():
    docker = shutil.which("docker")
    if not docker or subprocess.run([docker, "info"], capture_output=True).returncode != 0:
        pytest.skip("no Docker engine on this machine (docker info fails); stages are checked by parsing")
    out = subprocess.run([docker, "build", "-f", str(DOCKERFILE), "--build-arg", "PG_MAJOR=16",
                          "--target", "runner", "-t", "flyops-backup-runner:test", str(ROOT)],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]


def test_scheduled_jobs_get_the_fly_token_from_a_file_never_argv():
    """cron: FLY_API_TOKEN_FILE names a chmod-600 file; systemd: LoadCredential= hands it to
    the service as $CREDENTIALS_DIRECTORY/fly-api-token. Neither carries the token itself."""
    lines = crontab_lines(sched())
    assert 'FLY_API_TOKEN_FILE="/srv/ops repo/env/production.fly-token"' in lines
    assert not any("FLY_API_TOKEN=" in ln for ln in lines)
    for name, text in systemd_units(sched()).items():
        if name.endswith(".service"):
            cp = configparser.ConfigParser(interpolation=None, strict=True)
            cp.optionxform = str
            cp.read_string(text)
            assert cp["Service"]["LoadCredential"] == "fly-api-token:/srv/ops repo/env/production.fly-token"
            assert "FLY_API_TOKEN" not in text
    custom = sched(fly_token_file=Path("/etc/flyops/token"))
    assert 'FLY_API_TOKEN_FILE="/etc/flyops/token"' in crontab_lines(custom)
    with pytest.raises(BadInput):
        sched(fly_token_file=Path("relative/token"))
    assert (ROOT / ".gitignore").read_text().count("env/*.fly-token") == 1
