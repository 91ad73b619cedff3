#!/bin/sh
# What a Valkey replica of a KeyDB multi-master node gets: the full sync, and the stream after it.
#
#   bench/keydb_to_valkey.sh KEYDB_SRC_DIR VALKEY_SRC_DIR > bench/results/keydb-to-valkey.txt
#
# Two KeyDB masters (active-replica, multi-master, each REPLICAOF the other) and one Valkey node
# on loopback ports 7701-7703, data in a temp folder, all shut down at the end. Backs the
# "Moving a store from KeyDB to Valkey" section of keydb/README.md. Not a timing benchmark.
set -eu
K=${1:?KeyDB src dir (with keydb-server, keydb-cli)}
V=${2:?Valkey src dir (with valkey-server, valkey-cli)}
tmp=$(mktemp -d)
export REDISCLI_AUTH=mig-pw  # the password goes by environment and stdin, never argv
trap 'for p in 7701 7702; do "$K/keydb-cli" -p $p shutdown nosave >/dev/null 2>&1 || true; done
      "$V/valkey-cli" -p 7703 shutdown nosave >/dev/null 2>&1 || true; rm -rf "$tmp"' EXIT

conf() {  # port dir [extra lines]
  printf 'port %s\nbind 127.0.0.1\ndir %s\nrequirepass "%s"\nmasterauth "%s"\nsave ""\ndaemonize yes\nlogfile %s/log\n' \
    "$1" "$2" "$REDISCLI_AUTH" "$REDISCLI_AUTH" "$2"
}
mkdir "$tmp/a" "$tmp/b" "$tmp/v"
{ conf 7701 "$tmp/a"; printf 'active-replica yes\nmulti-master yes\n'; } | "$K/keydb-server" - >/dev/null
{ conf 7702 "$tmp/b"; printf 'active-replica yes\nmulti-master yes\n'; } | "$K/keydb-server" - >/dev/null
conf 7703 "$tmp/v" | "$V/valkey-server" - >/dev/null
sleep 1
kc() { "$K/keydb-cli" --no-auth-warning -p "$@"; }
vc() { "$V/valkey-cli" --no-auth-warning -p 7703 "$@"; }
kc 7701 REPLICAOF 127.0.0.1 7702 >/dev/null
kc 7702 REPLICAOF 127.0.0.1 7701 >/dev/null
echo "# $("$K/keydb-server" --version)"
echo "# $("$V/valkey-server" --version)"
kc 7701 SET before-a a >/dev/null; kc 7701 HSET h f v >/dev/null; kc 7701 SET ttl x EX 1000 >/dev/null
kc 7702 RPUSH l 1 2 3 >/dev/null; kc 7702 ZADD z 1 m >/dev/null
sleep 1
vc REPLICAOF 127.0.0.1 7701 >/dev/null
sleep 3
echo "valkey after REPLICAOF keydb: $(vc INFO replication | tr -d '\r' | grep -E '^(role|master_link_status):' | tr '\n' ' ')"
echo "full sync: DBSIZE keydb=$(kc 7701 DBSIZE) valkey=$(vc DBSIZE); list=$(vc LRANGE l 0 -1 | tr '\n' ,) hash=$(vc HGETALL h | tr '\n' ,) ttl=$(vc TTL ttl) zset=$(vc ZRANGE z 0 -1)"
kc 7701 SET after-on-a yes >/dev/null; kc 7702 SET after-on-b yes >/dev/null
sleep 2
echo "writes after the sync (on a, on b): valkey has after-on-a='$(vc GET after-on-a)' after-on-b='$(vc GET after-on-b)'; DBSIZE keydb=$(kc 7701 DBSIZE) valkey=$(vc DBSIZE)"
echo "valkey's log on the stream: $(grep -c "unknown command 'RREPLAY'" "$tmp/v/log") line(s) \"unknown command 'RREPLAY'\""
vc REPLICAOF NO ONE >/dev/null; vc REPLICAOF 127.0.0.1 7701 >/dev/null
sleep 3
echo "a second full sync (writers stopped): DBSIZE keydb=$(kc 7701 DBSIZE) valkey=$(vc DBSIZE); after-on-a='$(vc GET after-on-a)' after-on-b='$(vc GET after-on-b)'"
vc REPLICAOF NO ONE >/dev/null
echo "promoted: SET on valkey -> $(vc SET w 1); role $(vc ROLE | head -n 1)"
