#!/bin/sh
# Forms the Redis Cluster of docker-compose.cluster.yml: waits until every node of REDIS_NODES
# (comma-separated host:port, the services' own list) answers, then joins them as 3 masters with a
# replica each, unless the cluster is formed already. Run on every `up`: a restarted node keeps its
# nodes.conf (in the image's /data volume) and so its place in the cluster; after `down` the nodes
# come back empty and the cluster is formed anew.
set -eu

addresses=""
for node in $(echo "$REDIS_NODES" | tr ',' ' '); do
  host=${node%:*}
  port=${node##*:}
  tries=0
  until redis-cli -h "$host" -p "$port" ping >/dev/null 2>&1; do
    tries=$((tries + 1))
    if [ "$tries" -ge 120 ]; then
      echo "redis-cluster-init: $node does not answer" >&2
      exit 1
    fi
    sleep 1
  done
  # CLUSTER MEET, which --cluster create sends, takes an address, not a name.
  ip=$(getent hosts "$host" | awk '{ print $1; exit }')
  addresses="$addresses ${ip:-$host}:$port"
done

first=${REDIS_NODES%%,*}
if redis-cli -h "${first%:*}" -p "${first##*:}" cluster info | grep -q '^cluster_slots_assigned:16384'; then
  echo "redis-cluster-init: the cluster is formed already"
  exit 0
fi
# Refuses, and says so, a node that already knows others or holds keys (a cluster formed in part):
# `docker compose ... down` and `up` start over.
# shellcheck disable=SC2086 # one argument per address
redis-cli --cluster create $addresses --cluster-replicas 1 --cluster-yes
