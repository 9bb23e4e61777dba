# Shared by test/etcd/setup.sh, member.sh and teardown.sh (sourced, not run).
#
# A 3-member etcd cluster on 127.0.0.1 for the etcd suite (npm run test:etcd). Member N (0, 1, 2)
# serves clients on port $BASE+N and peers on $BASE+10+N, keeps its data in $STATE/member-N, and
# its process is recorded in $STATE/member-N.pid as "<pid> <starttime>": teardown (and the tests,
# which kill and restart members) stop exactly that process, by PID, never one that merely
# reuses the PID.

BASE="${COWCHAIN_ETCD_PORT_BASE:-23790}"
STATE="${COWCHAIN_ETCD_STATE:-/run/cowchain-etcd}"
ENV_FILE="$STATE/env"
LOG="$STATE/setup.log"
MEMBERS=(0 1 2)
CLUSTER_TOKEN="cowchain-test-$BASE"

client_port() { echo $((BASE + $1)); }
peer_port() { echo $((BASE + 10 + $1)); }
endpoints() { local n out=""; for n in "${MEMBERS[@]}"; do out="$out${out:+,}127.0.0.1:$(client_port "$n")"; done; echo "$out"; }
initial_cluster() { local n out=""; for n in "${MEMBERS[@]}"; do out="$out${out:+,}m$n=http://127.0.0.1:$(peer_port "$n")"; done; echo "$out"; }

. "$(dirname "${BASH_SOURCE[0]}")/../support/pids.sh"

# Start member $1 (state "new" or "existing") in the background; records its PID file.
start_member() {
  local n="$1" state="$2"
  mkdir -p "$STATE/member-$n"
  etcd --name "m$n" --data-dir "$STATE/member-$n/data" \
    --listen-client-urls "http://127.0.0.1:$(client_port "$n")" --advertise-client-urls "http://127.0.0.1:$(client_port "$n")" \
    --listen-peer-urls "http://127.0.0.1:$(peer_port "$n")" --initial-advertise-peer-urls "http://127.0.0.1:$(peer_port "$n")" \
    --initial-cluster "$(initial_cluster)" --initial-cluster-state "$state" --initial-cluster-token "$CLUSTER_TOKEN" \
    --heartbeat-interval 100 --election-timeout 1000 \
    >>"$STATE/member-$n/etcd.log" 2>&1 </dev/null &
  local pid=$!
  local st
  st="$(proc_starttime "$pid")" || return 1
  echo "$pid $st" >"$STATE/member-$n.pid"
}

# Stop member $1 if the recorded process is still ours (SIGTERM, then SIGKILL after 5 s).
stop_member() {
  local n="$1" line pid st
  [ -s "$STATE/member-$n.pid" ] || return 0
  line="$(cat "$STATE/member-$n.pid")"
  pid="${line%% *}"
  st="${line##* }"
  if proc_alive "$pid" "$st"; then
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 1 50); do proc_alive "$pid" "$st" || break; sleep 0.1; done
    proc_alive "$pid" "$st" && kill -KILL "$pid" 2>/dev/null
    for _ in $(seq 1 20); do proc_alive "$pid" "$st" || break; sleep 0.1; done
  fi
  rm -f "$STATE/member-$n.pid"
  ! proc_alive "$pid" "$st"
}

healthy() { ETCDCTL_API=3 etcdctl --endpoints "$(endpoints)" --dial-timeout 1s --command-timeout 2s endpoint health >/dev/null 2>&1; }

now_ms() { echo $(($(date +%s%N) / 1000000)); }
elapsed() { local d=$(($(now_ms) - $1)); printf '%d.%d' $((d / 1000)) $((d % 1000 / 100)); }
