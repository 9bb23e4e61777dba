# Shared by test/gluster/setup.sh and teardown.sh (sourced, not run).
#
# Everything the two scripts make lives under names given here; every process setup.sh starts
# (or that gluster spawns for it) is recorded in $STATE/pids as "<pid> <starttime> <role>", so
# that teardown stops exactly those processes, by PID, and never one that merely reuses a PID.

VOLNAME="${COWCHAIN_GLUSTER_VOLUME:-gv0}"
BRICK="${COWCHAIN_GLUSTER_BRICK:-/srv/cowchain-brick}"
MNT_A="${COWCHAIN_GLUSTER_MNT_A:-/mnt/cowchain-a}"
MNT_B="${COWCHAIN_GLUSTER_MNT_B:-/mnt/cowchain-b}"
STATE="${COWCHAIN_GLUSTER_STATE:-/run/cowchain-gluster}"
ENV_FILE="$STATE/env"
PIDS="$STATE/pids"
LOG="$STATE/setup.log"
GLUSTERD_PID_FILE="$STATE/glusterd.pid"
HOST="$(hostname)"

. "$(dirname "${BASH_SOURCE[0]}")/../support/pids.sh"

record_pid() { # pid role
  local st
  st="$(proc_starttime "$1")" || return 1
  if ! grep -q "^$1 $st " "$PIDS" 2>/dev/null; then
    echo "$1 $st $2" >>"$PIDS"
  fi
}

# PIDs of live gluster processes (glusterd, glusterfsd, glusterfs), one per line.
gluster_pids() {
  local d comm
  for d in /proc/[0-9]*; do
    comm="$(cat "$d/comm" 2>/dev/null)" || continue
    case "$comm" in
      glusterd | glusterfsd | glusterfs)
        [ "$(proc_state "${d#/proc/}")" = Z ] || echo "${d#/proc/}"
        ;;
    esac
  done
}

# The glusterfs FUSE client serving mount point $1: its last argument is the mount point.
fuse_client_pid() {
  local pid last
  for pid in $(gluster_pids); do
    last="$(tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | tail -n 1)"
    [ "$last" = "$1" ] && echo "$pid"
  done
}

is_mounted() { mountpoint -q "$1" 2>/dev/null; }

now_ms() { echo $(($(date +%s%N) / 1000000)); }
# seconds since $1 (from now_ms), one decimal
elapsed() { local d=$(($(now_ms) - $1)); printf '%d.%d' $((d / 1000)) $((d % 1000 / 100)); }
