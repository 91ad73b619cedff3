#!/bin/sh
# Start the store server. Part of every store image (flyops/fly/store_image/start.sh, copied into var/build/<env>/<store>/).
# It is the image's ENTRYPOINT (not the base image's docker-entrypoint.sh: KeyDB's
# pkg/docker/Dockerfile appends `--requirepass "$KEYDB_PASSWORD"` to the command line) and
# takes no arguments, so nothing can append a password to its argv.
#
# * The password comes from the app's secret (KEYDB_PASSWORD for KeyDB, REDIS_PASSWORD
#   otherwise) and reaches the server on its stdin ("-" config, `keydb-server -` /
#   `valkey-server -` / `redis-server -`: loadServerConfig's config_from_stdin in KeyDB 6.3.4
#   src/config.cpp and Valkey 8.0.1 src/config.c), never in argv or a file; the variable is
#   unset before the exec, so the server's environment does not hold it either.
# * vm.overcommit_memory=1 (the fork for BGSAVE and full syncs) only on a Fly machine
#   (FLY_MACHINE_ID set: the machine is its own VM with its own kernel), never on a host that
#   merely runs this script (a test, a laptop); STORE_SYSCTL=no skips it there as well.
# * On a Fly machine (FLY_MACHINE_ID set) the server does not run as root: it runs as the base
#   image's own unprivileged user (`keydb` in eqalpha/keydb: KeyDB v6.3.4 pkg/docker/Dockerfile
#   `useradd -r -g keydb keydb` and its entrypoint's `exec gosu keydb`; `valkey` and `redis` in
#   the official images, whose entrypoints step down the same way). Replacing their entrypoint
#   must not lose that step; the files of the volume are given to that user first, as those
#   entrypoints do (`find . \! -user X -exec chown X`). STORE_USER names another user,
#   STORE_USER=root keeps root.
# * KeyDB: the multi-master include, then peers.sh keeps the peer list current in the
#   background (first node: no peers yet, it simply serves; peers are added as they appear).
# * Valkey: replicas of <primary_region>.<app>.internal outside the primary region.
# * Redis: one standalone instance.
set -eu

if [ $# -ne 0 ]; then
  echo "start.sh: takes no arguments (got $#); the configuration comes from /etc/store and the app's secret" >&2
  exit 2
fi

engine=${STORE_ENGINE:?STORE_ENGINE is not set (fly.toml [env])}
conf_dir=${STORE_CONF_DIR:-/etc/store}
case "$engine" in
  keydb) var=KEYDB_PASSWORD; server=${STORE_SERVER:-keydb-server} ;;
  valkey) var=REDIS_PASSWORD; server=${STORE_SERVER:-valkey-server} ;;
  redis) var=REDIS_PASSWORD; server=${STORE_SERVER:-redis-server} ;;
  *) echo "start.sh: unknown STORE_ENGINE '$engine'" >&2; exit 2 ;;
esac

password=$(printenv "$var" || true)
if [ -z "$password" ]; then
  echo "start.sh: the $var secret is not set; refusing to start an open store (run: inv secrets.sync)" >&2
  exit 1
fi
case "$password" in
  *"
"*) echo "start.sh: $var contains a newline, which a config line cannot carry" >&2; exit 1 ;;
esac
# quoted for the server's config parser: backslash and double quote escaped
quoted=$(printf '%s' "$password" | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g')

if [ -n "${FLY_MACHINE_ID:-}" ] && [ "${STORE_SYSCTL:-yes}" != no ]; then
  sysctl -w vm.overcommit_memory=1 >/dev/null 2>&1 \
    || echo "start.sh: could not set vm.overcommit_memory=1; a BGSAVE fork may fail under memory pressure" >&2
fi
# the volume ([mounts] destination in fly.toml). STORE_DATA_DIR / STORE_PORT are for running
# the rendered, unchanged store.conf outside a machine (tests, keydb/mesh-check); not set on Fly
data_dir=${STORE_DATA_DIR:-/data}
overrides=""
if [ -n "${STORE_PORT:-}" ]; then overrides="port ${STORE_PORT}"; fi

replicaof=""
if [ "$engine" = valkey ] && [ -n "${FLY_REGION:-}" ] && [ -n "${PRIMARY_REGION:-}" ] \
   && [ "$FLY_REGION" != "$PRIMARY_REGION" ]; then
  replicaof="replicaof ${PRIMARY_REGION}.${FLY_APP_NAME}.internal 6379"
fi
include_keydb=""
if [ "$engine" = keydb ]; then
  include_keydb="include $conf_dir/keydb-multimaster.conf"
  peers="$(dirname "$0")/peers.sh"  # /fly/peers.sh in the image
  if [ -x "$peers" ] && [ -z "${STORE_NO_PEERS:-}" ]; then
    "$peers" loop &
  fi
fi

run_as=""
if [ -n "${FLY_MACHINE_ID:-}" ] && [ "$(id -u)" = 0 ]; then
  user=${STORE_USER:-$engine}
  if [ "$user" != root ]; then
    if ! id "$user" >/dev/null 2>&1; then
      echo "start.sh: this image has no user '$user' to run the server as (set STORE_USER in fly.toml [env])" >&2
      exit 1
    fi
    mkdir -p "$data_dir"
    find "$data_dir" \! -user "$user" -exec chown "$user" '{}' +
    if command -v setpriv >/dev/null 2>&1; then
      run_as="setpriv --reuid=$user --regid=$user --init-groups --"
    elif command -v gosu >/dev/null 2>&1; then
      run_as="gosu $user"
    else
      echo "start.sh: neither setpriv nor gosu in this image: cannot leave root" >&2
      exit 1
    fi
  fi
fi

unset "$var" password
# shellcheck disable=SC2086 # run_as is words on purpose
exec $run_as "$server" - <<CONF
dir $data_dir
include $conf_dir/store.conf
$include_keydb
$overrides
requirepass "$quoted"
masterauth "$quoted"
$replicaof
CONF
