"""A restic repository reached through a Host: argv builders plus the few calls we need.

Every restic call is a one-line script run by `host.run_script` with RESTIC_PASSWORD (and S3
keys) on stdin, so a local run and `--on user@host` behave the same. Snapshot tags (all start
with `flyops`) tie things together:

    part=dump       the pg_dump stream (file /database.dump; /<db>.dump before 2026-12)
    part=manifest   the manifest JSON (file /manifest.json); written only after the dump
                    succeeded, so "listed" == dump and manifest both complete
    part=verify     a verification record (file /verify.json), written by the drill
    id=<backup id>, env=<env>, kind=<kind>, pinned, and cheap listing fields on the manifest
"""

from __future__ import annotations

import json
import shlex
import urllib.parse
from dataclasses import dataclass, field
from datetime import datetime

from flyops.db.config import RepoConfig, Tools
from flyops.db.hosts import Host, RunResult
from flyops.errors import Busy, OpsError, PreconditionFailed

TAG = "flyops"


def restic_host(env: str) -> str:
    """The fixed --host for all snapshots of one environment (retention must not split by machine)."""
    return f"flyops-{env}"


#: restic's exit codes (cmd/restic/main.go, the switch at the end of main; doc/075_scripting.rst
#: "Exit codes"): 10 no repository (>= 0.17.0), 11 failed to lock (>= 0.17.0), 12 wrong password
#: (>= 0.17.1). Older restic (Debian 12's 0.14) exits 1 for all three, so its stderr is read too:
#: the texts come from internal/global/global.go (OpenRepository: "Is there a repository at the
#: following location?"), internal/repository/key.go (ErrNoKeyFound: "wrong password or no key
#: found") and internal/repository/lock_file.go ("repository is already locked").
RESTIC_NO_REPOSITORY, RESTIC_LOCKED, RESTIC_WRONG_PASSWORD = 10, 11, 12


def classify(rc: int, stderr: str) -> str | None:
    """'wrong-password', 'no-repository', 'locked' or None for any other restic failure."""
    if rc == RESTIC_WRONG_PASSWORD or "wrong password" in stderr:
        return "wrong-password"
    if rc == RESTIC_NO_REPOSITORY or "Is there a repository at the following location" in stderr \
            or "unable to open config file" in stderr or "repository does not exist" in stderr:
        return "no-repository"
    if rc == RESTIC_LOCKED or "repository is already locked" in stderr:
        return "locked"
    return None


NO_REPOSITORY_FIX = ("on first use, create it with `inv db.init --env ENV` (or `inv db.backup --env ENV --init`); "
                     "if it existed, it was moved or deleted: check backup.repository, or restore the repository "
                     "from its copy; a backup never creates one by itself")


def explain_failure(r: RunResult, what: str, location: str, *, stderr: str | None = None) -> OpsError:
    """One OpsError naming restic and why it failed. `stderr`: restic's own stderr when
    `r.stderr` mixes several processes' (a pipeline)."""
    err = (r.stderr if stderr is None else stderr).strip()
    kind = classify(r.rc if stderr is None else 1, err)
    if kind == "wrong-password":
        return OpsError(f"restic {what}: wrong password for repository {location}",
                        fix="check RESTIC_PASSWORD for this environment in env/ENV.env")
    if kind == "no-repository":
        return PreconditionFailed(f"restic {what}: there is no repository at {location}", fix=NO_REPOSITORY_FIX)
    if kind == "locked":
        return Busy(f"restic {what}: repository {location} is locked by another restic process "
                    "(a prune or check holds its exclusive lock)",
                    fix="wait for it to finish; a lock older than 30 minutes without refresh is stale "
                        "(`restic unlock` removes stale locks)")
    tail = "\n".join(err.splitlines()[-8:])
    return OpsError(f"restic {what} failed (exit {r.rc}) for repository {location}:\n{tail}",
                    fix="check the repository is reachable from the host and the S3 keys are right")


#: seconds to connect to an S3 endpoint before giving up. restic >= 0.16 itself retries an
#: unreachable backend for up to 15 minutes, which a person at a terminal would take for a hang.
REACH_TIMEOUT = 10


def endpoint(location: str) -> tuple[str, int] | None:
    """(host, port) of an S3 repository's endpoint; None for a folder."""
    if not location.startswith("s3:"):
        return None
    u = urllib.parse.urlsplit(location[3:])
    return u.hostname or "", u.port or (443 if u.scheme == "https" else 80)


#: the name restic's local backend gives a file while writing it (`temp_leftovers`): the final
#: name (an id, or `config`) + "-tmp-" + os.CreateTemp's random digits, as a find -regex.
TEMP_NAME = r".*/([0-9a-f]{64}|config)-tmp-[0-9]+"


@dataclass
class Repo:
    config: RepoConfig
    host: Host
    tools: Tools = Tools()
    _reached: bool = field(default=False, init=False, repr=False, compare=False)

    def check_reachable(self) -> None:
        """For an S3 repository: one TCP connect from the host that runs restic, within
        REACH_TIMEOUT seconds, before the first restic run. OpsError (exit 1) when it fails."""
        ep = endpoint(self.location)
        if ep is None or self._reached:
            return
        host, port = ep
        probe = f"exec 3<>/dev/tcp/{host}/{port}"
        r = self.host.run_script(f"timeout {REACH_TIMEOUT} bash -c {shlex.quote(probe)}\n")
        if not r.ok:
            raise OpsError(f"repository {self.location}: cannot connect to {host}:{port} from {self.host.name} "
                           f"within {REACH_TIMEOUT}s; nothing was changed",
                           fix="check the endpoint in backup.repository, the network path from that host, "
                               "and that the storage service is up")
        self._reached = True

    @property
    def location(self) -> str:
        return self.config.location

    def argv(self, *args: str) -> list[str]:
        region = ["-o", f"s3.region={self.config.region}"] if self.config.region else []
        return [self.tools.restic, "--repo", self.config.location, "--no-cache", *region, *args]

    def run(self, *args: str, data: str | None = None, what: str | None = None, check: bool = True) -> RunResult:
        self.check_reachable()
        r = self.host.run_script(shlex.join(self.argv(*args)) + "\n", self.config.secrets(), data=data)
        if check and not r.ok:
            raise explain_failure(r, what or args[0], self.location)
        return r

    def exists(self) -> bool:
        if not self.location.startswith("s3:"):
            # a local repository exists when its config file does: one cheap `test`, not a
            # restic run that derives the key (about a second of CPU each time)
            r = self.host.run_script(shlex.join(["test", "-f", f"{self.location}/config"]) + "\n")
            return r.ok  # a wrong password or a damaged repository fails the next restic call, clearly
        r = self.run("cat", "config", check=False)  # after check_reachable(): a refusal is not "no repository"
        if r.ok:
            return True
        if classify(r.rc, r.stderr) == "no-repository":
            return False
        raise explain_failure(r, "open", self.location)

    def require(self) -> None:
        """PreconditionFailed (exit 5) when there is no repository: a backup never creates
        one, so that a deleted or moved repository is not silently replaced by an empty one
        (a cron job would then report success into it). `init` creates one explicitly."""
        if not self.exists():
            raise PreconditionFailed(f"there is no restic repository at {self.location}; nothing was changed",
                                     fix=NO_REPOSITORY_FIX)

    def init(self) -> bool:
        """`restic init` when there is no repository yet; False when there already is one."""
        if self.exists():
            return False
        self.run("init", what="init")
        return True

    def snapshots(self, *tags: str) -> list[dict]:
        """Snapshots carrying every tag in `tags` (plus `flyops`), oldest first."""
        r = self.run("snapshots", "--json", "--tag", ",".join((TAG, *tags)), what="snapshots")
        return json.loads(r.stdout or "[]") or []

    def forget(self, snapshot_ids: list[str], *, prune: bool = True) -> None:
        if snapshot_ids:
            self.run("forget", *(["--prune"] if prune else []), *snapshot_ids, what="forget")

    def unlock_stale(self) -> None:
        """`restic unlock` without --remove-all: removes only restic's stale locks (older than
        30 minutes, or from a process gone from this machine: cmd/restic/cmd_unlock.go,
        internal/repository/lock_file.go `stale`). A restic killed mid-backup leaves one, and
        restic's exclusive commands (forget, prune) refuse to run beside any lock, stale or not."""
        self.run("unlock", what="unlock")

    def temp_leftovers(self, older_than: datetime, *, delete: bool = False) -> list[dict]:
        """restic's unfinished temporary files in a folder repository, last written before
        `older_than`: [{"path": relative path, "bytes": size}], removed when `delete`.

        restic's local backend writes every file as `<name>-tmp-<random digits>` in its final
        folder, preallocated to the full size, and renames it once written and synced
        (internal/backend/local/local.go, Save; tempFile = os.CreateTemp). A restic killed in
        between (SIGKILL, the OOM killer, a reboot) leaves that file, and no restic command
        removes it: Repository.List skips every name that is not an id
        (internal/repository/repository.go, List: "unable to parse %v as an ID"), so
        `restic prune` neither sees nor reclaims it. An S3 repository has none: restic stores
        each file with one PUT below 200 MiB (internal/backend/s3/s3.go, Save: PartSize) and
        packs are 16 MiB by default. The age check leaves a file another restic is writing now
        alone (its writes keep its modification time current). The search and the removal are
        one `find` on the host, so a file written after the cut-off is never removed."""
        if self.location.startswith("s3:"):
            return []
        argv = ["find", self.location, "-mindepth", "1", "-maxdepth", "3", "-type", "f",
                "-regextype", "posix-extended", "-regex", TEMP_NAME, "!", "-newermt", f"@{int(older_than.timestamp())}",
                "-printf", r"%s\t%P\n", *(["-delete"] if delete else [])]
        r = self.host.run_script(shlex.join(argv) + "\n")
        if not r.ok:
            raise OpsError(f"repository {self.location}: cannot list restic's temporary files on {self.host.name} "
                           f"(find exit {r.rc}): {r.stderr.strip()[-300:]}",
                           fix="check the folder is readable (and writable, to remove them) by this user")
        rows = [line.split("\t", 1) for line in r.stdout.splitlines() if "\t" in line]
        return [{"path": path, "bytes": int(size)} for size, path in sorted(rows, key=lambda x: x[1])]

    def prune(self) -> RunResult:
        """`restic prune`: removes data no snapshot references, such as the packs a killed or
        failed upload left behind (restic writes packs before the snapshot that names them)."""
        return self.run("prune", what="prune")

    def backup_argv(self, filename: str, tags: list[str], env: str) -> list[str]:
        """`restic backup` reading stdin, as used in pipelines."""
        tag_args: list[str] = []
        for t in (TAG, *tags):
            tag_args += ["--tag", t]
        return self.argv("backup", "--stdin", "--stdin-filename", filename, "--host", restic_host(env),
                         "--json", *tag_args)

    def store_json(self, filename: str, obj: dict, tags: list[str], env: str) -> str:
        """Store a small JSON document as its own snapshot; returns the snapshot id."""
        script = shlex.join(self.backup_argv(filename, tags, env)) + "\n"
        r = self.host.run_script(script, self.config.secrets(), data=json.dumps(obj, indent=1, sort_keys=True))
        if not r.ok:
            raise explain_failure(r, f"backup {filename}", self.location)
        return parse_summary(r.stdout)["snapshot_id"]

    def read_json(self, snapshot_id: str, filename: str) -> dict:
        r = self.run("dump", snapshot_id, "/" + filename, what=f"dump {filename}")
        return json.loads(r.stdout)

    def add_tags(self, snapshot_id: str, tags: list[str]) -> None:
        args: list[str] = []
        for t in tags:
            args += ["--add", t]
        self.run("tag", *args, snapshot_id, what="tag")


def parse_summary(stdout: str) -> dict:
    """The `summary` message of `restic backup --json` output."""
    for line in reversed(stdout.splitlines()):
        line = line.strip()
        if line.startswith("{") and '"summary"' in line:
            return json.loads(line)
    raise OpsError("restic backup printed no summary (did it crash?)")


def tag_value(snapshot: dict, key: str) -> str | None:
    prefix = key + "="
    for t in snapshot.get("tags") or []:
        if t.startswith(prefix):
            return t[len(prefix):]
    return None
