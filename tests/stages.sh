#!/usr/bin/env bash
# `make test`: run each stage as its own `make STAGE`, in parallel lanes (stages that share a
# container name, an image build, a port or a file stay in one lane, in order), and print every
# stage's wall time and its lane at the end, the failed, killed and not-run ones included.
#   tests/stages.sh STAGE...          (the table lists the stages in this order)
# NEO_TEST_LANES   the lanes: stage names, lanes separated by '|' ("lint unit | faults molecule");
#                  a STAGE in no lane joins lane 1. Empty or 1: one lane, STAGE... serially, with
#                  each stage's output streamed as it runs.
# NEO_TEST_SETUP   targets made once before the lanes start (the venv: two lanes must not build it)
# NEO_TEST_LANE_WORKERS  PYTEST_WORKERS for every stage when lanes run in parallel (unset: unchanged)
# NEO_TEST_FAIL_FAST=1   a failure stops the other lanes too, after their current stage (default:
#                  they run on, so one run reports every lane)
# NEO_TEST_LOGS    where each stage's output goes, STAGE.log (default .stages)
# NEO_TEST_GRACE   seconds from forwarding Ctrl-C/SIGTERM to the lanes to SIGKILL (default 20)
# A lane stops at its first failure; its later stages are "not run". Each stage's log is printed
# whole when the stage ends, under a lock, so two stages' output never interleaves. Each lane is a
# process group of its own: Ctrl-C or SIGTERM to this script is sent to every lane's group (pytest
# tears its fixtures down), and whatever is left after NEO_TEST_GRACE seconds is SIGKILLed; if this
# script is SIGKILLed, each lane's watchdog kills its group within a second.
set -uo pipefail
make=${MAKE:-make}
logs=${NEO_TEST_LOGS:-.stages}
state=$logs/.state
grace=${NEO_TEST_GRACE:-20}
fail_fast=${NEO_TEST_FAIL_FAST:-0}
stages=("$@")
mkdir -p "$logs"
rm -rf "$state"
mkdir -p "$state"
for stage in "${stages[@]}"; do rm -f "$logs/$stage.log"; done

fmt() { printf '%dm%02ds' $(($1 / 60)) $(($1 % 60)); }

# Lanes: lane_of[stage] = N (1-based); lane_stages[N] = the stages in STAGE... order.
declare -A lane_of
declare -a lane_stages
spec=${NEO_TEST_LANES:-1}
[ "$spec" = 1 ] && spec=""
n=1
IFS='|' read -r -a parts <<<"$spec"
for part in "${parts[@]}"; do
  for s in $part; do lane_of[$s]=$n; done
  n=$((n + 1))
done
for stage in "${stages[@]}"; do
  l=${lane_of[$stage]:-1}
  lane_of[$stage]=$l
  lane_stages[l]="${lane_stages[l]:-} $stage"
done
serial=1
[ "${#lane_stages[@]}" -gt 1 ] && serial=0
if [ "$serial" = 0 ] && [ -n "${NEO_TEST_LANE_WORKERS+set}" ]; then export PYTEST_WORKERS=$NEO_TEST_LANE_WORKERS; fi

say() { { flock 9; printf '%s\n' "$@"; } 9>"$state/print.lock"; }

run_stage() {  # LANE STAGE: run it, record "seconds result", print its log; fails if the stage failed
  local lane=$1 stage=$2 log=$logs/$2.log start status result
  start=$(date +%s)
  echo "$start" >"$state/$stage.started"
  if [ "$serial" = 1 ]; then
    echo "==> make $stage"
    $make --no-print-directory "$stage" 2>&1 | tee "$log"
    status=$?
  else
    say "==> lane $lane: make $stage started (output: $log, printed when it ends)"
    $make --no-print-directory "$stage" >"$log" 2>&1 </dev/null
    status=$?
  fi
  result=ok
  [ "$status" = 0 ] || result=FAILED
  echo "$(($(date +%s) - start)) $result" >"$state/$stage.done"
  if [ "$serial" = 0 ]; then
    {
      flock 9
      echo "==> lane $lane: make $stage: $result in $(fmt $(($(date +%s) - start))); its output:"
      cat "$log"
      echo "<== lane $lane: end of make $stage ($result)"
    } 9>"$state/print.lock"
  fi
  [ "$status" = 0 ]
}

run_lane() {  # LANE: its stages in order, up to the first failure (or another lane's, when fail-fast)
  set +m  # the lane's commands stay in the lane's process group
  local lane=$1 stage group=$BASHPID main=$$
  # A stage Ctrl-C or SIGTERM ends is "killed" (on_signal prints it), not FAILED: no result is written.
  trap 'exit 130' INT
  trap 'exit 143' TERM
  # If this script dies without a word (SIGKILL: no trap runs), the lane's group follows it.
  # (A background subshell here ignores SIGINT: the trap makes Ctrl-C end it with the lane.)
  (
    trap 'exit 0' INT
    while kill -0 "$main" 2>/dev/null; do sleep 1; done
    kill -s KILL -- "-$group"
  ) &
  for stage in ${lane_stages[lane]}; do
    if [ "$fail_fast" = 1 ] && [ -e "$state/failed" ]; then break; fi
    run_stage "$lane" "$stage" || { touch "$state/failed"; break; }
  done
  kill -s KILL -- "-$group"  # the watchdog, and anything a stage left behind in the lane's group
}

table() {  # print the wall-time table; fails if a stage failed or was killed
  local total=$(($(date +%s) - total_start)) bad="" stage t result
  echo
  echo "make test: wall time per stage"
  for stage in "${stages[@]}"; do
    if [ -e "$state/$stage.done" ]; then
      read -r t result <"$state/$stage.done"
      t=$(fmt "$t")
    elif [ -e "$state/$stage.started" ]; then
      t=$(fmt $(($(date +%s) - $(cat "$state/$stage.started")))) result=killed
    else
      t=- result="not run"
    fi
    case $result in FAILED | killed) bad="$bad $stage" ;; esac
    printf '  %-14s %8s  %-8s  lane %s\n' "$stage" "$t" "$result" "${lane_of[$stage]}"
  done
  printf '  %-14s %8s  %s\n' total "$(fmt "$total")" "${bad:+failed:$bad}"
  [ -z "$bad" ]
}

declare -a pids
on_signal() {  # SIG: forward it to every lane's process group, SIGKILL what is left after the grace
  local sig=$1 pid alive i stage
  trap '' INT TERM
  echo "stages.sh: SIG$sig: stopping every lane (SIGKILL after ${grace}s)" >&2
  for pid in "${pids[@]}"; do kill -s "$sig" -- "-$pid" 2>/dev/null; done
  for ((i = 0; i < grace * 10; i++)); do
    alive=0
    for pid in "${pids[@]}"; do kill -0 -- "-$pid" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  for pid in "${pids[@]}"; do kill -s KILL -- "-$pid" 2>/dev/null; done
  wait 2>/dev/null
  for stage in "${stages[@]}"; do  # what the killed stages were doing
    if [ -e "$state/$stage.started" ] && [ ! -e "$state/$stage.done" ]; then
      echo "==> lane ${lane_of[$stage]}: make $stage: killed in $(fmt $(($(date +%s) - $(cat "$state/$stage.started")))); its output:"
      cat "$logs/$stage.log"
      echo "<== lane ${lane_of[$stage]}: end of make $stage (killed)"
    fi
  done
  table
  [ "$sig" = INT ] && exit 130
  exit 143
}
trap 'on_signal INT' INT
trap 'on_signal TERM' TERM

total_start=$(date +%s)
set -m  # every background job below is a process group of its own
if [ -n "${NEO_TEST_SETUP:-}" ]; then
  echo "==> make $NEO_TEST_SETUP (before the lanes)"
  (
    set +m
    # shellcheck disable=SC2086  # NEO_TEST_SETUP is a list of targets
    $make --no-print-directory $NEO_TEST_SETUP
  ) &
  pids=($!)
  set +m
  if ! wait "${pids[0]}"; then
    echo "error: make $NEO_TEST_SETUP failed: no stage ran" >&2
    table
    exit 1
  fi
fi
pids=()
set -m
if [ "$serial" = 0 ]; then
  echo "make test: ${#lane_stages[@]} lanes in parallel (NEO_TEST_LANES=1 runs them serially):"
  for l in "${!lane_stages[@]}"; do echo "  lane $l:${lane_stages[l]}"; done
fi
for l in "${!lane_stages[@]}"; do
  run_lane "$l" &
  pids+=($!)
done
set +m  # the groups are made; no "[1] Terminated" job notices in the log
for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null; done  # (each lane ends by SIGKILLing its group)
table
