# Process bookkeeping shared by the suites' service scripts (test/etcd/common.sh,
# test/gluster/common.sh; sourced, not run). A process is named by its PID and its start time
# together, so that a script stops exactly the process it started, never one that merely reuses
# the PID.

# Process start time (field 22 of /proc/<pid>/stat, in clock ticks since boot): with the PID it
# names one process for good. Field 2 (comm) may hold spaces: cut after the last ')'.
proc_starttime() {
  local stat
  stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
  stat="${stat##*) }"
  # now field 3 (state) is the first word: starttime is word 20
  set -- $stat
  echo "${20}"
}

proc_state() {
  local stat
  stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
  stat="${stat##*) }"
  echo "${stat%% *}"
}

# Alive = the same process (PID and start time) and not a zombie. Orphaned daemons can stay
# zombies here when PID 1 does not reap them: a zombie is dead for our purposes.
proc_alive() { # pid starttime
  local st
  st="$(proc_starttime "$1")" || return 1
  [ "$st" = "$2" ] || return 1
  [ "$(proc_state "$1")" != Z ]
}
