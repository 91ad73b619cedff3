#!/bin/sh
# KeyDB multi-master peers from Fly's private DNS, kept current (copy of keydb/templates/peers.sh).
#
#   peers.sh once   one pass: add new peers, remove gone ones
#   peers.sh loop   a pass every $PEER_INTERVAL seconds (default 5), forever
#
# Peers are the AAAA records of <app>.internal (started machines of the app, every region)
# minus this machine's own address. A new address gets `REPLICAOF <addr> 6379` (with
# multi-master that adds a master); an address that left DNS gets `REPLICAOF REMOVE <addr>
# 6379`. The set this node replicates from is kept in $PEER_STATE (ephemeral, like the
# server's own master list, so both start empty after a restart). Unlike Fly's old example
# this loops over the peers (not the node's own address), removes peers, and leaves a
# node that is alone (first boot) serving on its own.
set -u

app=${FLY_APP_NAME:?FLY_APP_NAME is not set}
self=${FLY_PRIVATE_IP:-}
state=${PEER_STATE:-/run/store-peers}
cli=${PEER_CLI:-keydb-cli}
resolver=${PEER_RESOLVER:-fdaa::3}
interval=${PEER_INTERVAL:-5}
export REDISCLI_AUTH="${KEYDB_PASSWORD:-}"

lookup() {
  dig +short aaaa "$app.internal" "@$resolver" 2>/dev/null | grep ':' | sort -u
}

store() {  # the server's answer must be OK, or the state is not changed
  out=$("$cli" --no-auth-warning -h ::1 -p 6379 "$@" 2>&1) || return 1
  [ "$out" = "OK" ]
}

once() {
  touch "$state"
  wanted=$(lookup | grep -vxF "${self:-none}" || true)
  for peer in $wanted; do
    if ! grep -qxF "$peer" "$state"; then
      if store REPLICAOF "$peer" 6379; then
        echo "$peer" >> "$state"
        echo "peers.sh: added $peer"
      fi
    fi
  done
  for peer in $(cat "$state"); do
    if ! printf '%s\n' "$wanted" | grep -qxF "$peer"; then
      if store REPLICAOF REMOVE "$peer" 6379; then
        grep -vxF "$peer" "$state" > "$state.new" || true
        mv "$state.new" "$state"
        echo "peers.sh: removed $peer"
      fi
    fi
  done
}

case "${1:-once}" in
  once) once ;;
  loop) while true; do sleep "$interval"; once; done ;;
  *) echo "usage: peers.sh once|loop" >&2; exit 2 ;;
esac
