#!/bin/sh
# KeyDB multi-master peers from Fly's private DNS, kept current (flyops/fly/store_image/peers.sh).
#
#   peers.sh once   one pass
#   peers.sh loop   a pass every $PEER_INTERVAL seconds (default 5), forever
#
# Peers are the AAAA records of <app>.internal (started machines of the app, every region)
# minus this machine's own address. Each pass:
#
# 1. asks DNS. A lookup that fails (dig's exit status is not 0: real dig 9.18 prints
#    ";; communications error to fdaa::3#53: timed out" on STDOUT and exits 9) or that
#    yields no IPv6 address changes nothing: no peer is removed on a bad answer. Only lines
#    that are IPv6 addresses are taken.
# 2. reads the server's own master list (INFO replication: master_host, master_1_host, ...,
#    src/server.cpp genRedisInfoString in KeyDB 6.3.4). That list is the truth; the state
#    file only counts, per master, the successful lookups in a row it was absent from.
# 3. `REPLICAOF <addr> 6379` for a peer in DNS the server does not list. Any answer starting
#    with OK counts ("OK", and "OK Already connected to specified master" for a known one:
#    replicaofCommand in src/replication.cpp).
# 4. `REPLICAOF REMOVE <addr> 6379` for a listed master only after it has been absent from
#    $PEER_REMOVE_AFTER successful lookups in a row (default 3, ~15 s): a machine that
#    restarts or a DNS record that flaps does not cost a full resync. "Master not found"
#    means it is gone already.
set -u

app=${FLY_APP_NAME:?FLY_APP_NAME is not set}
self=${FLY_PRIVATE_IP:?FLY_PRIVATE_IP is not set (a node must not replicate from itself)}
state=${PEER_STATE:-/run/store-peers}
cli=${PEER_CLI:-keydb-cli}
dig=${PEER_DIG:-dig}
resolver=${PEER_RESOLVER:-fdaa::3}
interval=${PEER_INTERVAL:-5}
remove_after=${PEER_REMOVE_AFTER:-3}
port=${PEER_PORT:-6379}
export REDISCLI_AUTH="${KEYDB_PASSWORD:-}"

log() { echo "peers.sh: $*" >&2; }

# AAAA records, one IPv6 address a line; exit 1 when the lookup failed or found none
lookup() {
  answer=$("$dig" +short +time=2 +tries=2 aaaa "$app.internal" "@$resolver" 2>&1)
  rc=$?
  if [ "$rc" -ne 0 ]; then
    log "DNS lookup of $app.internal failed (dig exit $rc): $(printf '%s' "$answer" | head -n 1); nothing changed"
    return 1
  fi
  addrs=$(printf '%s\n' "$answer" | grep -E '^[0-9a-fA-F]*:[0-9a-fA-F:]*$' | sort -u)
  if [ -z "$addrs" ]; then
    log "DNS lookup of $app.internal found no address; nothing changed"
    return 1
  fi
  printf '%s\n' "$addrs"
}

server() {  # the local server's answer on stdout, whatever its exit status
  "$cli" --no-auth-warning -h ::1 -p "$port" "$@" 2>&1
}

# the server's master list: master_host, master_1_host, ... (KeyDB), master_host (Redis)
masters() {
  info=$(server INFO replication) || return 1
  case "$info" in *"role:"*) ;; *) return 1 ;; esac
  printf '%s\n' "$info" | tr -d '\r' | sed -n 's/^master\(_[0-9]*\)\{0,1\}_host://p' | sort -u
}

misses() {  # how many successful lookups in a row $1 was absent from
  awk -v a="$1" '$1 == a { print $2; exit }' "$state" 2>/dev/null
}

once() {
  wanted=$(lookup) || return 0
  wanted=$(printf '%s\n' "$wanted" | grep -vxF "$self")
  if ! listed=$(masters); then
    log "could not read INFO replication from the local server; nothing changed"
    return 0
  fi
  for peer in $wanted; do
    printf '%s\n' "$listed" | grep -qxF "$peer" && continue
    out=$(server REPLICAOF "$peer" "$port")
    case "$out" in
      OK*) log "added $peer ($out)" ;;
      *) log "REPLICAOF $peer $port: $out" ;;
    esac
  done
  : > "$state.new"
  for master in $listed; do
    if printf '%s\n' "$wanted" | grep -qxF "$master"; then
      continue  # present: no count
    fi
    n=$(misses "$master")
    n=$(( ${n:-0} + 1 ))
    if [ "$n" -ge "$remove_after" ]; then
      out=$(server REPLICAOF REMOVE "$master" "$port")
      case "$out" in
        OK*|*"Master not found"*) log "removed $master (absent from $n lookups)"; continue ;;
        *) log "REPLICAOF REMOVE $master $port: $out" ;;
      esac
    else
      log "$master absent from DNS ($n of $remove_after lookups before removal)"
    fi
    echo "$master $n" >> "$state.new"
  done
  mv "$state.new" "$state"
}

case "${1:-once}" in
  once) once ;;
  loop) while true; do sleep "$interval"; once; done ;;
  *) echo "usage: peers.sh once|loop" >&2; exit 2 ;;
esac
