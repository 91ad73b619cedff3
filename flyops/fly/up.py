"""`inv up`: from nothing, or any partial state, to the stack: provision, first deploys, placement.

`read_up_work` reads (the provisioning plan, the apps never deployed, the machines to place);
`check_first_deploy` refuses what would fail halfway (no Dockerfile, stale fly.toml files)
before anything changes; `apply_up_plan` acts under the deploy lock: it re-plans (someone may
have changed the world since), provisions (flyops.fly.provision), verifies that nothing still
differs, hands the never-deployed apps to `deploy_environment`, and converges placement
(`fly deploy` places machines in the primary region only).
"""

from __future__ import annotations

from dataclasses import dataclass

from flyops.errors import BadInput, OpsError
from flyops.fly import placement
from flyops.fly.audit import Outcome
from flyops.fly.deploy import deploy_environment
from flyops.fly.flyctl.runner import FlyRunner
from flyops.fly.lock import deploy_lock
from flyops.fly.provision import UpPlan, apply_up, read_up_plan, undeployed
from flyops.fly.render import stale_files
from flyops.stack.envfile import EnvFile
from flyops.stack.model import Stack


@dataclass
class UpWork:
    """What `up` would do: provisioning rows, first deploys, machines to place."""

    plan: UpPlan
    to_deploy: list[str]
    moves: list

    @property
    def nothing(self) -> bool:
        return not self.plan.pending() and not self.to_deploy and not self.moves

    def describe(self) -> str:
        what = f"{len(self.plan.pending())} change(s)"
        what += f" and a first deploy of {', '.join(self.to_deploy)}" if self.to_deploy else ""
        return what + (f", machines in {len(self.moves)} region(s)" if self.moves or self.to_deploy else "")


def read_up_work(stack: Stack, envfile: EnvFile, runner: FlyRunner, *, deploy: bool) -> UpWork:
    plan = read_up_plan(stack, envfile, runner)
    to_deploy = undeployed(stack, runner) if deploy else []
    moves = placement.actionable(stack, plan.placement) if deploy else []
    return UpWork(plan, to_deploy, moves)


def check_first_deploy(stack: Stack, to_deploy: list[str], image: str | None) -> None:
    """What the first deploy needs, checked before `up` changes anything: a Dockerfile in
    project.source (or --image) for the Rails apps, and current rendered fly.toml files."""
    rails = [c for c in to_deploy if c in stack.apps]
    if rails and not image and not (stack.source_dir() / "Dockerfile").is_file():
        raise BadInput(
            f"{', '.join(rails)} would be deployed from {stack.source_dir()} (project.source in fly/stack.toml), "
            "which has no Dockerfile; nothing was changed",
            fix=f"point project.source at the Rails app, or pass --image REF, or provision only: inv up --env {stack.env} --no-deploy",
        )
    stale = [f"{p.relative_to(stack.root)}: {why}" for p, why in stale_files(stack) if p.stem in to_deploy]
    if stale:
        raise BadInput(f"rendered fly.toml files are not current: {'; '.join(stale)}; nothing was changed",
                       fix=f"inv config.render --env {stack.env}   (then commit fly/{stack.env}/)")


def apply_up_plan(stack: Stack, envfile: EnvFile, runner: FlyRunner, work: UpWork, outcome: Outcome, *,
                  deploy: bool, image: str | None, force: bool) -> None:
    with deploy_lock(stack, runner, "up", f"inv up: {len(work.plan.pending())} change(s)"):
        plan = read_up_plan(stack, envfile, runner)  # under the lock: the world may have changed
        result = apply_up(plan, runner, envfile, restart=True, force=force, say=runner.echo)
        outcome.changed = result.summary()
        if runner.dry:
            if deploy and work.to_deploy:
                runner.echo(f"[dry] then deploy {', '.join(work.to_deploy)}")
            return
        left = read_up_plan(stack, envfile, runner).pending()
        if left:
            raise OpsError("the world still differs from the stack after `up`: "
                           + "; ".join(f"{r.kind} {r.app} {r.target} ({r.action})" for r in left))
        runner.echo(f"provisioned {stack.env}: {result.summary()}")
        if not deploy:
            return
        to_deploy = undeployed(stack, runner)
        if to_deploy:
            runner.echo(f"handing over to deploy: {', '.join(to_deploy)}")
            outcome.changed += f"; first deploy of {', '.join(to_deploy)}"
            deployed = deploy_environment(stack, runner, only=to_deploy, image=image, take_lock=False, say=runner.echo)
            if not deployed.ok:
                raise OpsError(f"deploy after provisioning failed: {deployed.summary()}",
                               fix=f"inv deploy --env {stack.env} (provisioning is complete)")
        # deploy_environment placed what it deployed; this covers the rest (no call when nothing differs)
        done = placement.converge(stack, runner, say=runner.echo)
        runner.echo(f"placement: {done.summary()}")
        if done.scaled or done.destroyed:
            outcome.changed += f"; placement: {done.summary()}"
