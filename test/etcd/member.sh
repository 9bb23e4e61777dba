#!/usr/bin/env bash
# Stop or restart one member of the test cluster (test/etcd/setup.sh) — used by the tests to
# kill a member mid-race and bring it back: `member.sh stop N` (SIGKILL when KILL=1, else
# SIGTERM) stops only the process recorded in $STATE/member-N.pid; `member.sh start N` starts
# it again on its existing data. Exit status 0 when done.
set -uo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
. "$HERE/common.sh"
n="${2:?member number}"
case "${1:-}" in
  stop)
    if [ "${KILL:-0}" = 1 ] && [ -s "$STATE/member-$n.pid" ]; then
      read -r pid st <"$STATE/member-$n.pid"
      if proc_alive "$pid" "$st"; then kill -KILL "$pid"; fi
    fi
    stop_member "$n"
    ;;
  start)
    start_member "$n" existing
    ;;
  *)
    echo "usage: member.sh stop|start N" >&2
    exit 2
    ;;
esac
