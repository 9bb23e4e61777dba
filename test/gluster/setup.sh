#!/usr/bin/env bash
# A real GlusterFS volume on this machine for the GlusterFS suite (npm run test:gluster):
# installs glusterfs-server/-client (and strace) if missing, starts glusterd (a daemon of ours,
# PID file under /run), creates and starts a one-brick volume, and mounts it twice through FUSE —
# two mounts of one volume playing two hosts. Writes the mount points to $STATE/env:
#   COWCHAIN_GLUSTER_A=/mnt/cowchain-a  COWCHAIN_GLUSTER_B=/mnt/cowchain-b
# Undo everything with test/gluster/teardown.sh (which stops only the processes recorded here).
#
# Cache mode (COWCHAIN_GLUSTER_CACHE):
#   coherent (default) — what two hosts sharing a volume need: a write, or a rename, made through
#     one mount is seen at once through the other. Volume options performance.quick-read=off,
#     performance.stat-prefetch=off; mount options attribute-timeout=0, entry-timeout=0,
#     negative-timeout=0, direct-io-mode=enable.
#   default — plain `mount -t glusterfs` on a volume with GlusterFS's default options: the other
#     mount sees changes up to ~1 s late, and may get ESTALE (see README "Running on GlusterFS").
#
# Prints one line: "gluster setup: ok: …" or "gluster setup: FAILED: <why>" (exit 1); the details
# are in $STATE/setup.log. On failure, whatever it had started is torn down again.
set -uo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
. "$HERE/common.sh"

CACHE="${COWCHAIN_GLUSTER_CACHE:-coherent}"
T0=$(now_ms)
STARTED=0

fail() {
  if [ "$STARTED" = 1 ]; then
    echo "--- setup failed: $*; tearing down" >>"$LOG"
    bash "$HERE/teardown.sh" >>"$LOG" 2>&1
  fi
  echo "gluster setup: FAILED: $*" >&2
  exit 1
}
run() { # log a command and its output
  echo "+ $*" >>"$LOG"
  "$@" >>"$LOG" 2>&1
}

[ "$(id -u)" = 0 ] || { echo "gluster setup: FAILED: must run as root (glusterd, mount)" >&2; exit 1; }
case "$CACHE" in coherent | default) ;; *) echo "gluster setup: FAILED: COWCHAIN_GLUSTER_CACHE must be coherent or default, not '$CACHE'" >&2; exit 1 ;; esac

# A previous setup not torn down: tear it down first (it only stops what that setup recorded).
if [ -e "$PIDS" ] || [ -e "$ENV_FILE" ]; then
  bash "$HERE/teardown.sh" >/dev/null 2>&1
fi
mkdir -p "$STATE" || { echo "gluster setup: FAILED: cannot create the state directory $STATE" >&2; exit 1; }
: >"$LOG"
: >"$PIDS"

# FUSE: the GlusterFS client is a FUSE file system.
if [ ! -c /dev/fuse ]; then
  run modprobe fuse
fi
[ -c /dev/fuse ] || fail "GlusterFS cannot run here: no FUSE (/dev/fuse is missing and 'modprobe fuse' did not create it)"
grep -qw fuse /proc/filesystems || fail "GlusterFS cannot run here: the kernel has no FUSE file system (not in /proc/filesystems)"

# Packages.
need=()
command -v glusterd >/dev/null && command -v gluster >/dev/null || need+=(glusterfs-server)
[ -x /sbin/mount.glusterfs ] || need+=(glusterfs-client)
command -v strace >/dev/null || need+=(strace)
if [ "${#need[@]}" -gt 0 ]; then
  run apt-get update -qq || fail "apt-get update failed (see $LOG)"
  DEBIAN_FRONTEND=noninteractive run apt-get install -y -qq "${need[@]}" || fail "cannot install ${need[*]} with apt-get (see $LOG)"
fi

# Only our own glusterd: one started by someone else would own the volumes and the port.
other="$(for p in $(gluster_pids); do [ "$(cat /proc/$p/comm)" = glusterd ] && echo "$p"; done | tr '\n' ' ')"
[ -z "$other" ] || fail "a glusterd not started by this script is running (pid ${other% }); stop it, or run teardown.sh if it was ours"
for m in "$MNT_A" "$MNT_B"; do
  ! is_mounted "$m" || fail "$m is already a mount point (not ours): unmount it first"
done

# glusterd
before="$(gluster_pids | sort)"
STARTED=1
run glusterd -p "$GLUSTERD_PID_FILE" || fail "glusterd did not start (see $LOG and /var/log/glusterfs/glusterd.log)"
for _ in $(seq 1 50); do [ -s "$GLUSTERD_PID_FILE" ] && break; sleep 0.1; done
[ -s "$GLUSTERD_PID_FILE" ] || fail "glusterd wrote no PID file $GLUSTERD_PID_FILE"
record_pid "$(cat "$GLUSTERD_PID_FILE")" glusterd || fail "glusterd exited at once (see /var/log/glusterfs/glusterd.log)"
ready=0
for _ in $(seq 1 100); do
  if gluster --mode=script pool list >/dev/null 2>&1; then ready=1; break; fi
  sleep 0.2
done
[ "$ready" = 1 ] || fail "glusterd does not answer 'gluster pool list' after 20 s (see /var/log/glusterfs/glusterd.log)"

# The volume: a leftover of ours (same brick) is removed; anything else under that name is not ours.
if gluster --mode=script volume info "$VOLNAME" >/dev/null 2>&1; then
  if gluster --mode=script volume info "$VOLNAME" | grep -q "^Brick1: .*:$BRICK\$"; then
    run gluster --mode=script volume stop "$VOLNAME" force
    run gluster --mode=script volume delete "$VOLNAME" || fail "cannot delete the leftover volume $VOLNAME (see $LOG)"
  else
    fail "a GlusterFS volume named $VOLNAME exists and its brick is not $BRICK: not ours (set COWCHAIN_GLUSTER_VOLUME)"
  fi
fi
run rm -rf "$BRICK"
mkdir -p "$(dirname "$BRICK")" 2>>"$LOG" || fail "cannot create $(dirname "$BRICK") for the brick"
# 'force': the brick is on the root file system, which gluster otherwise refuses.
run gluster --mode=script volume create "$VOLNAME" "$HOST:$BRICK" force || fail "gluster volume create $VOLNAME failed (see $LOG)"
MOUNT_OPTS=defaults
if [ "$CACHE" = coherent ]; then
  for o in performance.quick-read performance.stat-prefetch; do
    run gluster --mode=script volume set "$VOLNAME" "$o" off || fail "gluster volume set $VOLNAME $o off failed (see $LOG)"
  done
  MOUNT_OPTS=attribute-timeout=0,entry-timeout=0,negative-timeout=0,direct-io-mode=enable
fi
run gluster --mode=script volume start "$VOLNAME" || fail "gluster volume start $VOLNAME failed (see $LOG and /var/log/glusterfs/bricks/)"
for f in /var/run/gluster/vols/"$VOLNAME"/*.pid; do
  [ -s "$f" ] && record_pid "$(cat "$f")" "brick($f)"
done
run gluster --mode=script volume status "$VOLNAME"
gluster --mode=script volume status "$VOLNAME" 2>/dev/null | grep -q "^Brick .* Y " || fail "the brick of $VOLNAME is not online (see /var/log/glusterfs/bricks/)"

# Two FUSE mounts of the volume.
for m in "$MNT_A" "$MNT_B"; do
  mkdir -p "$m" 2>>"$LOG" || fail "cannot create the mount point $m"
  echo "+ mount -t glusterfs -o $MOUNT_OPTS $HOST:/$VOLNAME $m" >>"$LOG"
  if ! out="$(mount -t glusterfs -o "$MOUNT_OPTS" "$HOST:/$VOLNAME" "$m" 2>&1)"; then
    echo "$out" >>"$LOG"
    why="$(grep -h '\] E \[' /var/log/glusterfs/"$(echo "${m#/}" | tr / -)".log 2>/dev/null | tail -n 1)"
    fail "mount -t glusterfs $HOST:/$VOLNAME $m failed: ${why:-$(echo "$out" | head -n 1)}"
  fi
  is_mounted "$m" || fail "$m is not a mount point after mount -t glusterfs"
  pid="$(fuse_client_pid "$m")"
  [ -n "$pid" ] || fail "no glusterfs client process serves $m"
  record_pid "$pid" "fuse($m)"
done

# Whatever else gluster started for us (other daemons, hook scripts still running are not
# gluster processes): every new gluster process since glusterd started.
for p in $(comm -13 <(echo "$before") <(gluster_pids | sort)); do
  grep -q "^$p " "$PIDS" || record_pid "$p" "spawned($(cat /proc/$p/comm 2>/dev/null))"
done

# One volume, two mounts: a file written through A is there through B.
probe=".cowchain-setup-probe-$$"
echo "$probe" >"$MNT_A/$probe" || fail "cannot write to $MNT_A"
got="$(cat "$MNT_B/$probe" 2>/dev/null)"
rm -f "$MNT_A/$probe"
[ "$got" = "$probe" ] || fail "a file written through $MNT_A is not readable through $MNT_B"

{
  echo "COWCHAIN_GLUSTER_A=$MNT_A"
  echo "COWCHAIN_GLUSTER_B=$MNT_B"
  echo "COWCHAIN_GLUSTER_VOLUME=$HOST:/$VOLNAME"
  echo "COWCHAIN_GLUSTER_CACHE=$CACHE"
} >"$ENV_FILE"
echo "--- recorded processes:" >>"$LOG"
cat "$PIDS" >>"$LOG"
echo "gluster setup: ok: $HOST:/$VOLNAME ($CACHE caching) mounted at $MNT_A and $MNT_B in $(elapsed "$T0") s; processes: $(awk '{print $3 "=" $1}' "$PIDS" | tr '\n' ' '); env: $ENV_FILE"
