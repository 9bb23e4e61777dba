#!/usr/bin/env bash
# A real 3-member etcd cluster on 127.0.0.1 for the etcd suite (npm run test:etcd): installs
# Debian's etcd-server (and etcd-client, for etcdctl) if missing, starts three members (ports
# in common.sh), waits until every member is healthy, and writes $STATE/env:
#   COWCHAIN_ETCD_ENDPOINTS=127.0.0.1:23790,127.0.0.1:23791,127.0.0.1:23792
#   COWCHAIN_ETCD_STATE=/run/cowchain-etcd
# Undo it with test/etcd/teardown.sh (which stops only the processes recorded here, by PID).
# Prints one line: "etcd setup: ok: …" or "etcd setup: FAILED: <why>" (exit 1); details in
# $STATE/setup.log and $STATE/member-N/etcd.log. On failure whatever it started is stopped again.
set -uo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
. "$HERE/common.sh"

T0=$(now_ms)
fail() {
  echo "--- setup failed: $*; tearing down" >>"$LOG" 2>/dev/null
  for n in "${MEMBERS[@]}"; do stop_member "$n"; done
  echo "etcd setup: FAILED: $*" >&2
  exit 1
}
run() { echo "+ $*" >>"$LOG"; "$@" >>"$LOG" 2>&1; }

# A previous setup not torn down: tear it down first (it stops only what that setup recorded).
if [ -d "$STATE" ]; then bash "$HERE/teardown.sh" >/dev/null 2>&1; fi
mkdir -p "$STATE" || { echo "etcd setup: FAILED: cannot create the state directory $STATE" >&2; exit 1; }
: >"$LOG"

need=()
command -v etcd >/dev/null || need+=(etcd-server)
command -v etcdctl >/dev/null || need+=(etcd-client)
if [ "${#need[@]}" -gt 0 ]; then
  [ "$(id -u)" = 0 ] || fail "${need[*]} missing and not root (cannot apt-get install)"
  run apt-get update -qq || fail "apt-get update failed (see $LOG)"
  DEBIAN_FRONTEND=noninteractive run apt-get install -y -qq "${need[@]}" || fail "cannot install ${need[*]} with apt-get (see $LOG)"
fi
# Debian's package may start its own etcd service on 2379; ours use other ports and never touch it.

for n in "${MEMBERS[@]}"; do
  for p in "$(client_port "$n")" "$(peer_port "$n")"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then fail "port $p is in use (not ours): set COWCHAIN_ETCD_PORT_BASE"; fi
  done
done

for n in "${MEMBERS[@]}"; do
  rm -rf "$STATE/member-$n"
  start_member "$n" new || fail "etcd member m$n exited at once (see $STATE/member-$n/etcd.log)"
done
ok=0
for _ in $(seq 1 150); do
  if healthy; then ok=1; break; fi
  sleep 0.2
done
[ "$ok" = 1 ] || fail "the cluster is not healthy after 30 s (see $STATE/member-*/etcd.log)"

{
  echo "COWCHAIN_ETCD_ENDPOINTS=$(endpoints)"
  echo "COWCHAIN_ETCD_STATE=$STATE"
  echo "COWCHAIN_ETCD_PORT_BASE=$BASE"
} >"$ENV_FILE"
echo "etcd setup: ok: 3 members at $(endpoints) in $(elapsed "$T0") s; processes: $(for n in "${MEMBERS[@]}"; do printf 'm%s=%s ' "$n" "$(cut -d' ' -f1 "$STATE/member-$n.pid")"; done)env: $ENV_FILE"
