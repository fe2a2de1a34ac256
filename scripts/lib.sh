# Usage: source "$(dirname "${BASH_SOURCE[0]}")/lib.sh" — the helpers of scripts/check, scripts/test, scripts/bench and scripts/demo (not run directly).
# shellcheck shell=bash
#
# Sourcing this file installs an EXIT trap that runs the cleanups registered with ctg_at_exit
# (newest first), also when the script fails or is interrupted. Every conntrack operation the
# scripts do happens inside a network namespace created here (ctg_netns_create): the machine's
# own namespace is never written to.

export LC_ALL=C # stable number formats and sort order, whatever the caller's locale
CTG_SCRIPTS=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# The repo top as git sees it; a checkout git refuses to read (e.g. "dubious ownership" when CI
# runs as root on a clone owned by someone else) falls back to the parent of scripts/.
CTG_TOP=$(git -C "$CTG_SCRIPTS" rev-parse --show-toplevel 2>/dev/null) || CTG_TOP=$(dirname "$CTG_SCRIPTS")
CTG_PROG=$(basename "$0")

ctg_log() { printf '%s: %s\n' "$CTG_PROG" "$*" >&2; }
ctg_die() {
  ctg_log "error: $*"
  exit 2
}
ctg_header() { printf '\n==== %s ====\n' "$*"; }

# --- cleanup on exit -------------------------------------------------------------------------

CTG_CLEANUPS=()
CTG_EXIT_STATUS=0
# ctg_at_exit CMD [ARGS...]: run CMD when the script exits, however it exits.
ctg_at_exit() {
  local cmd
  printf -v cmd '%q ' "$@"
  CTG_CLEANUPS+=("$cmd")
}
ctg_run_cleanups() {
  CTG_EXIT_STATUS=$?
  set +e
  trap - EXIT
  trap '' INT TERM HUP # let the cleanup finish: it is bounded
  local i
  for ((i = ${#CTG_CLEANUPS[@]} - 1; i >= 0; i--)); do
    eval "${CTG_CLEANUPS[i]}"
  done
  exit "$CTG_EXIT_STATUS"
}
trap ctg_run_cleanups EXIT
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 143' TERM

# --- gate steps (scripts/check, scripts/test) ------------------------------------------------

CTG_GATE_STARTED=$SECONDS
CTG_STEP=setup
CTG_PASSED=()

# ctg_step NAME COMMAND...: one gate step under a header; the first failure ends the run.
ctg_step() {
  CTG_STEP=$1
  shift
  ctg_header "$CTG_STEP"
  printf '+ %s\n' "$*"
  "$@"
  CTG_PASSED+=("$CTG_STEP")
}

# ctg_gate_summary: the last line of a gate run, PASS with the steps that ran, or FAIL with the
# step that failed. Registered with ctg_at_exit by the gate scripts.
ctg_gate_summary() {
  local took=$((SECONDS - CTG_GATE_STARTED)) passed
  passed=$(IFS=,; printf '%s' "${CTG_PASSED[*]-}")
  if ((CTG_EXIT_STATUS == 0)); then
    printf '\nscripts/%s: PASS (%s) in %d s\n' "$CTG_PROG" "$passed" "$took"
  else
    printf '\nscripts/%s: FAIL at step "%s" (exit %d) after %d s; passed: %s\n' \
      "$CTG_PROG" "$CTG_STEP" "$CTG_EXIT_STATUS" "$took" "${passed:-none}" >&2
  fi
}

# --- environment -----------------------------------------------------------------------------

ctg_require_root() {
  [[ $EUID -eq 0 ]] || ctg_die "must run as root: $*"
}

# ctg_ensure_tools CMD:PACKAGE...: apt-get install the packages whose command is missing.
# CMD is looked up in PATH (type -P, so the `time` keyword does not count), or tested as a path.
ctg_ensure_tools() {
  local spec cmd pkg missing=()
  for spec in "$@"; do
    cmd=${spec%%:*} pkg=${spec#*:}
    if [[ $cmd == */* ]]; then
      [[ -x $cmd ]] && continue
    else
      type -P "$cmd" >/dev/null && continue
    fi
    missing+=("$pkg")
  done
  ((${#missing[@]})) || return 0
  [[ $EUID -eq 0 ]] || ctg_die "missing packages: ${missing[*]} (apt-get install them as root)"
  type -P apt-get >/dev/null || ctg_die "missing packages: ${missing[*]}, and no apt-get to install them"
  ctg_log "installing missing packages: ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" </dev/null
}

# ctg_ensure_cargo: cargo on PATH, also when CI starts a non-login shell that never read
# ~/.profile (rustup installs into ~/.cargo/bin).
ctg_ensure_cargo() {
  type -P cargo >/dev/null && return 0
  local bin=${CARGO_HOME:-${HOME:-/root}/.cargo}/bin
  [[ -x $bin/cargo ]] || ctg_die "cargo not found (not on PATH, not in $bin): install the stable Rust toolchain with rustup"
  PATH=$bin:$PATH
}

# --- network namespaces ----------------------------------------------------------------------

CTG_NETNS_OWNED=()

ctg_netns_exists() { ip netns list | awk -v ns="$1" '$1 == ns {found = 1} END {exit !found}'; }
ctg_netns_list_ctg() { ip netns list | awk '$1 ~ /^ctg-/ {print $1}'; }

# ctg_netns_new_leftovers BEFORE NOW: the names in NOW (ctg-* names, one a line) that are not in
# BEFORE, i.e. the namespaces a run left behind. Every creator puts its pid in the name
# (ctg-kt-<pid>-<n>, ctg-lab-<pid>-<role>, ctg-bench-<pid>, ctg-test-preflight-<pid>); on a
# machine shared with other runs, a new namespace whose creator is still running, and is not
# this script, belongs to that other run and is named on stderr but not counted. (/proc, not
# kill -0: an unprivileged caller cannot signal root's processes.)
ctg_netns_new_leftovers() {
  local before=$1 now=$2 ns pid
  while read -r ns; do
    [[ -n $ns ]] || continue
    grep -qxF -- "$ns" <<<"$before" && continue
    if [[ $ns =~ ^ctg-[a-z-]+-([0-9]+)(-|$) ]]; then
      pid=${BASH_REMATCH[1]}
      if [[ $pid != "$$" && -d /proc/$pid ]]; then
        ctg_log "not counted: $ns, whose creator (pid $pid) is still running: another run's"
        continue
      fi
    fi
    printf '%s\n' "$ns"
  done <<<"$now"
}

# ctg_netns_create NAME: create a namespace named ctg-*, deleted again when the script exits.
ctg_netns_create() {
  local ns=$1
  [[ $ns == ctg-* ]] || ctg_die "refusing to create namespace '$ns': ours are named ctg-*"
  ip netns add "$ns" || ctg_die "cannot create network namespace $ns (root with CAP_SYS_ADMIN and CAP_NET_ADMIN needed; or the name exists)"
  CTG_NETNS_OWNED+=("$ns")
  ctg_at_exit ctg_netns_delete "$ns"
}

# ctg_netns_delete NAME: end the processes still inside our namespace (all of them were started
# by this script: the namespace is private to it), then delete it. Idempotent.
ctg_netns_delete() {
  local ns=$1 pids i
  ctg_netns_exists "$ns" || return 0
  for i in 1 2 3 4 5 6 7 8 9 10; do
    mapfile -t pids < <(ip netns pids "$ns" 2>/dev/null)
    ((${#pids[@]})) || break
    if ((i < 10)); then kill -TERM "${pids[@]}" 2>/dev/null; else kill -KILL "${pids[@]}" 2>/dev/null; fi
    sleep 0.5
  done
  ip netns del "$ns" || ctg_log "warning: could not delete network namespace $ns"
}

# ctg_ns NAME CMD...: run CMD inside a namespace this script created, and nowhere else.
ctg_ns() {
  local ns=$1 owned
  shift
  for owned in "${CTG_NETNS_OWNED[@]}"; do
    [[ $owned == "$ns" ]] && {
      ip netns exec "$ns" "$@"
      return
    }
  done
  ctg_die "refusing to run '$*' in namespace '$ns': not created by this script"
}

# --- measuring -------------------------------------------------------------------------------

# Runs argv[1:] under GNU time (which reports the peak RSS of the command from wait4, as
# `/usr/bin/time -v` "Maximum resident set size" does), timing it with a monotonic clock.
# Prints "SECONDS PEAK_RSS_KIB" and exits with the command's status, or 124 when it ran longer
# than CTG_MEASURE_TIMEOUT seconds (its process group is then killed). GNU time rather than
# Python's own wait4: an exec'd child inherits its parent's RSS high-water mark, and Python is
# ten times bigger than GNU time.
CTG_MEASURE_PY='
import os, signal, subprocess, sys, tempfile, threading, time
limit = float(os.environ.get("CTG_MEASURE_TIMEOUT", "120"))
fd, rss_file = tempfile.mkstemp(prefix="ctg-rss-")
os.close(fd)
try:
    with open(os.environ.get("CTG_MEASURE_OUT", os.devnull), "wb") as out:
        t = time.perf_counter()
        p = subprocess.Popen(["/usr/bin/time", "-f", "%M", "-o", rss_file, *sys.argv[1:]],
                             stdout=out, start_new_session=True)
        # A blocking wait: Popen.wait(timeout=...) polls with sleeps of up to 50 ms, which
        # rounded sub-second timings up by as much. The timeout kills from a timer instead.
        expired = []
        def kill():
            expired.append(True)
            os.killpg(p.pid, signal.SIGKILL)
        timer = threading.Timer(limit, kill)
        timer.start()
        try:
            rc = p.wait()
            secs = time.perf_counter() - t
        finally:
            timer.cancel()
            if p.poll() is None:  # interrupted: end what we started
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        if expired:
            rc = 124
    with open(rss_file) as f:
        words = f.read().split()  # "Command exited with non-zero status N" may come first
    rss = words[-1] if words and words[-1].isdigit() else "0"
finally:
    os.unlink(rss_file)
print(f"{secs:.6f} {rss}")
sys.exit(rc)
'

# ctg_measure NS CMD...: run CMD inside namespace NS, stdout to /dev/null (or to the file named
# by CTG_MEASURE_OUT), stderr passed through, killed after CTG_MEASURE_TIMEOUT seconds (default
# 120). Prints "SECONDS PEAK_RSS_KIB"; returns CMD's status, 124 on timeout.
ctg_measure() {
  local ns=$1
  shift
  ctg_ns "$ns" python3 -c "$CTG_MEASURE_PY" "$@"
}
