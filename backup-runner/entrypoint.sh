#!/bin/sh
# backup-runner entrypoint: one scheduled run = backup (if due) then prune.
#
# Environment (set by `fly machine run --env`, see flyops/db/schedule.py):
#   FLYOPS_ENV      which environment (fly/<env>.toml) to back up        (required)
#   IF_OLDER_THAN   skip the backup when the last good one is younger     (default 20h)
#   PRUNE           1 = run `inv db.prune --yes` after the backup     (default 1)
# Secrets (Fly app secrets, `fly secrets import`; names in schedule.RUNNER_SECRET_KEYS):
#   DATABASE_URL RESTIC_REPOSITORY RESTIC_PASSWORD AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY ...
#
# The tasks read their secrets from env/<env>.env, so the entrypoint writes that file
# (mode 600, inside /app/env which only this user can read) from the process environment
# and removes it on exit. Values are never echoed.
set -eu

: "${FLYOPS_ENV:?set FLYOPS_ENV to the environment to back up (fly machine run --env FLYOPS_ENV=...)}"
IF_OLDER_THAN="${IF_OLDER_THAN:-20h}"
PRUNE="${PRUNE:-1}"
cd /app

envfile="env/${FLYOPS_ENV}.env"
cleanup() { rm -f "$envfile"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

umask 077
: > "$envfile"
for key in DATABASE_URL RESTIC_REPOSITORY RESTIC_PASSWORD AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY \
           AWS_DEFAULT_REGION AWS_ENDPOINT_URL_S3 BACKUP_HEARTBEAT_URL BACKUP_FAILURE_WEBHOOK_URL; do
    eval "value=\${$key-}"
    if [ -n "$value" ]; then
        # single-quoted dotenv value; a ' inside is written as '\'' is not dotenv, so refuse it
        case "$value" in *"'"*) echo "backup-runner: $key contains a single quote; not supported" >&2; exit 2 ;; esac
        printf "%s='%s'\n" "$key" "$value" >> "$envfile"
    fi
done
unset value

echo "backup-runner: env=${FLYOPS_ENV} if-older-than=${IF_OLDER_THAN} prune=${PRUNE} pg_dump=$(pg_dump --version) restic=$(restic version | cut -d' ' -f2)"
status=0
inv db.backup --env "$FLYOPS_ENV" --kind scheduled --direct --if-older-than "$IF_OLDER_THAN" || status=$?
if [ "$status" -ne 0 ]; then
    echo "backup-runner: db.backup failed with exit code $status; not pruning" >&2
    exit "$status"
fi
if [ "$PRUNE" = 1 ]; then
    inv db.prune --env "$FLYOPS_ENV" --yes
fi
