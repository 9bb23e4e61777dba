#!/usr/bin/env bash
# Undo test/etcd/setup.sh: stop the members it (or member.sh) recorded — by PID and start time,
# nothing else — and remove the state directory with their data. Exits non-zero if a member
# could not be stopped.
set -u
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
. "$HERE/common.sh"
if [ ! -d "$STATE" ]; then
  echo "etcd teardown: nothing to tear down (no $STATE)"
  exit 0
fi
rc=0
stopped=""
for n in "${MEMBERS[@]}"; do
  if [ -s "$STATE/member-$n.pid" ]; then
    if stop_member "$n"; then stopped="$stopped m$n"; else echo "etcd teardown: WARNING: member m$n did not stop"; rc=1; fi
  fi
done
[ "$rc" = 0 ] && rm -rf "$STATE"
echo "etcd teardown: stopped:${stopped:- none}"
exit "$rc"
