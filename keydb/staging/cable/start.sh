#!/bin/sh
# Start the store server. Generated folder's copy of keydb/templates/start.sh.
#
# * The password comes from the app's secret (KEYDB_PASSWORD for KeyDB, REDIS_PASSWORD
#   otherwise) and reaches the server on its stdin ("-" config), never in argv or a file.
# * KeyDB: the multi-master include, then peers.sh keeps the peer list current in the
#   background (first node: no peers yet, it simply serves; peers are added as they appear).
# * Valkey: replicas of <primary_region>.<app>.internal outside the primary region.
# * Redis: one standalone instance.
set -eu

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

# best effort: these need privileges a Fly machine has and a test does not
sysctl -w vm.overcommit_memory=1 >/dev/null 2>&1 || true

replicaof=""
if [ "$engine" = valkey ] && [ -n "${FLY_REGION:-}" ] && [ -n "${PRIMARY_REGION:-}" ] \
   && [ "$FLY_REGION" != "$PRIMARY_REGION" ]; then
  replicaof="replicaof ${PRIMARY_REGION}.${FLY_APP_NAME}.internal 6379"
fi
include_keydb=""
if [ "$engine" = keydb ]; then
  include_keydb="include $conf_dir/keydb-multimaster.conf"
  if [ -x /fly/peers.sh ] && [ -z "${STORE_NO_PEERS:-}" ]; then
    /fly/peers.sh loop &
  fi
fi

exec "$server" - <<CONF
include $conf_dir/store.conf
$include_keydb
requirepass "$quoted"
masterauth "$quoted"
$replicaof
CONF
