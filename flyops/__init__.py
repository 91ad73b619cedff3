"""flyops: run a Rails stack on Fly.io from one stack definition.

The package is the pure core; `tasks.py` and `flyops/tasks/` are thin Invoke wrappers.
"""
