#!/usr/bin/env bash
# Undo test/gluster/setup.sh: unmount both mounts, stop and delete the volume, stop the
# processes setup.sh recorded in $STATE/pids — by PID (and start time: a reused PID is never
# touched), nothing else — remove the brick, the mount points and the state directory.
# Runs every step even when one fails (it is also the cleanup after a failed run); says what it
# stopped; exits non-zero if something could not be cleaned up.
set -u
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
. "$HERE/common.sh"

T0=$(now_ms)
rc=0
say() { echo "gluster teardown: $*"; }
warn() { say "WARNING: $*"; rc=1; }

if [ ! -e "$PIDS" ] && [ ! -e "$ENV_FILE" ] && ! is_mounted "$MNT_A" && ! is_mounted "$MNT_B"; then
  say "nothing to tear down (no $PIDS)"
  exit 0
fi

# role of a recorded PID, and whether it is still the process we started
roles() { [ -e "$PIDS" ] && cat "$PIDS"; }
glusterd_line="$(roles | awk '$3 == "glusterd"' | head -n 1)"
glusterd_alive() { [ -n "$glusterd_line" ] && proc_alive $glusterd_line; }

# 1. Unmount (this ends the FUSE client processes). Only GlusterFS mounts of our volume.
for m in "$MNT_B" "$MNT_A"; do
  is_mounted "$m" || continue
  if ! grep -q " $m fuse.glusterfs " /proc/mounts; then
    warn "$m is mounted but not by GlusterFS: left alone"
    continue
  fi
  if umount "$m" 2>/dev/null; then
    say "unmounted $m"
  elif umount -l "$m" 2>/dev/null; then
    say "unmounted $m lazily (it was busy)"
  else
    warn "cannot unmount $m"
  fi
done

# 2. Stop and delete the volume, if our glusterd still runs.
if glusterd_alive; then
  if gluster --mode=script volume info "$VOLNAME" >/dev/null 2>&1; then
    gluster --mode=script volume stop "$VOLNAME" force >/dev/null 2>&1 && say "stopped volume $VOLNAME" || warn "volume stop $VOLNAME failed"
    gluster --mode=script volume delete "$VOLNAME" >/dev/null 2>&1 && say "deleted volume $VOLNAME" || warn "volume delete $VOLNAME failed"
  fi
  # glusterd runs hook scripts after volume operations (e.g. delete/post/S57glusterfind-delete-post):
  # let its children finish before stopping it.
  gd_pid="${glusterd_line%% *}"
  for _ in $(seq 1 50); do
    kids="$(ps -o pid= --ppid "$gd_pid" 2>/dev/null | tr -d ' ')"
    busy=""
    for k in $kids; do [ "$(proc_state "$k")" != Z ] && busy=1; done
    [ -z "$busy" ] && break
    sleep 0.2
  done
fi

# 3. Stop the recorded processes: FUSE clients, bricks, anything else gluster spawned, glusterd last.
stop_pid() { # pid starttime role
  local pid="$1" st="$2" role="$3"
  if ! proc_alive "$pid" "$st"; then
    say "$role pid $pid: already exited"
    return
  fi
  # after an unmount or a volume stop the process exits by itself: give it a moment
  for _ in $(seq 1 20); do proc_alive "$pid" "$st" || { say "$role pid $pid: exited"; return; }; sleep 0.1; done
  kill -TERM "$pid" 2>/dev/null
  for _ in $(seq 1 50); do proc_alive "$pid" "$st" || { say "$role pid $pid: killed (SIGTERM)"; return; }; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null
  for _ in $(seq 1 20); do proc_alive "$pid" "$st" || { say "$role pid $pid: killed (SIGKILL)"; return; }; sleep 0.1; done
  warn "$role pid $pid survives SIGKILL"
}
for pass in 'fuse(' 'brick(' 'spawned(' glusterd; do
  roles | while read -r pid st role; do
    case "$role" in "$pass"*) stop_pid "$pid" "$st" "$role" ;; esac
  done
done

# 4. Files: the brick, the mount points (only when empty and unmounted), the state.
if [ -d "$BRICK" ]; then
  rm -rf "$BRICK" && say "removed brick $BRICK" || warn "cannot remove $BRICK"
fi
for m in "$MNT_A" "$MNT_B"; do
  if [ -d "$m" ] && ! is_mounted "$m"; then rmdir "$m" 2>/dev/null || warn "$m is not empty: left in place"; fi
done
if [ -d "$STATE" ]; then
  rm -f "$ENV_FILE" "$PIDS" "$GLUSTERD_PID_FILE"
fi
say "done in $(elapsed "$T0") s$([ $rc = 0 ] || echo ' (with warnings)')"
exit $rc
