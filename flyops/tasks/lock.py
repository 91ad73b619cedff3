"""lock.*: the per-environment deploy lock (the app <project>-lock-<env> on Fly)."""

from __future__ import annotations

from flyops.errors import BadInput
from flyops.fly import audit
from flyops.fly import lock as deploy_lock
from flyops.present import console, print_json
from flyops.tasks.base import runner_for, stack_for, task


@task(help={"message": "why (required; everyone who is refused sees it)"})
def acquire(ctx, env, message="", verbose=False, json=False):
    """Hold the environment's deploy lock until `lock.release` (exit 4 if someone holds it)."""
    if not message.strip():
        raise BadInput("lock.acquire needs a reason: -m \"why\"", fix=f"inv lock.acquire --env {env} -m \"db migration freeze\"")
    stack = stack_for(env)
    runner = runner_for(ctx, verbose=verbose)
    me = deploy_lock.acquire(stack, runner, deploy_lock.MANUAL_TASK, message)
    audit.record(stack, runner, "lock.acquire", f"locked {stack.env}: {message}")
    if json:
        print_json({"env": stack.env, "app": deploy_lock.lock_app(stack), "held": True, "holder": me.as_dict()})
        return
    console().print(f"{stack.env}: lock {deploy_lock.lock_app(stack)} {me.describe()}")


@task(help={})
def release(ctx, env, verbose=False, json=False):
    """Release the environment's deploy lock, whoever holds it (say who it was)."""
    stack = stack_for(env)
    runner = runner_for(ctx, verbose=verbose)
    was = deploy_lock.release(stack, runner)
    if was is not None:
        audit.record(stack, runner, "lock.release", f"released the {stack.env} lock ({was.describe()})")
    if json:
        print_json({"env": stack.env, "app": deploy_lock.lock_app(stack), "released": was is not None,
                    "was": was.as_dict() if was else None})
        return
    if was is None:
        console().print(f"{stack.env}: the lock was free")
        return
    console().print(f"{stack.env}: released the lock {was.describe()}")


@task(help={})
def status(ctx, env, json=False, verbose=False):
    """Who holds the environment's deploy lock, since when and why."""
    stack = stack_for(env)
    holder = deploy_lock.holder(stack, runner_for(ctx, verbose=verbose))
    if json:
        print_json({"env": stack.env, "app": deploy_lock.lock_app(stack), "held": holder is not None,
                    "holder": holder.as_dict() if holder else None})
        return
    console().print(f"{stack.env}: {holder.describe()}" if holder else f"{stack.env}: the lock is free")
