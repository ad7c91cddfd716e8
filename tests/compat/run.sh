#!/usr/bin/env bash
# The client compatibility matrix (see CONTRACT.md): installs real Kafka clients
# from the package registries, runs each one's scenarios against a fresh `eddy`
# and prints a client × scenario matrix. Exits non-zero if any client cannot be
# installed, any scenario fails or is not reported, or the broker panics.
#
#   tests/compat/run.sh [CLIENT...]      (default: every client)
#
# EDDY names the broker binary (default: the debug build under the target dir).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}
export COMPAT_CACHE=${COMPAT_CACHE:-$target/compat}
export EDDY=${EDDY:-$target/debug/eddy}
export COMPAT=$here
all=(kcat confluent-kafka kafka-python aiokafka kafkajs sarama kafka-go)
clients=("$@")
[ ${#clients[@]} -gt 0 ] || clients=("${all[@]}")

family() {
  case $1 in
    kcat | kafkajs) echo js ;;
    confluent-kafka | kafka-python | aiokafka) echo python ;;
    sarama | kafka-go) echo go ;;
    *) echo "compat: unknown client $1 (known: ${all[*]})" >&2; exit 2 ;;
  esac
}
expected() {
  case $1 in
    kcat) echo "metadata produce consume consume-group commit-resume" ;;
    confluent-kafka) echo "admin produce consume-group commit-resume transactions" ;;
    *) echo "admin produce consume-group commit-resume" ;;
  esac
}

[ -x "$EDDY" ] || { echo "compat: no broker binary at $EDDY (build it with cargo build, or set EDDY)" >&2; exit 2; }
mkdir -p "$COMPAT_CACHE"

# Install what the chosen clients need, each family once. A failed install
# fails the run: the matrix never silently loses a client.
declare -A installed=()
failed=0
for c in "${clients[@]}"; do
  f=$(family "$c") || exit 2
  [ -n "${installed[$f]:-}" ] && continue
  echo "compat: installing the $f clients"
  if bash "$here/install-$f.sh"; then installed[$f]=ok; else installed[$f]=failed; failed=1; echo "compat: install-$f.sh FAILED" >&2; fi
done

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Starts a fresh broker in $1 (a run directory); sets PORT and PID.
start_broker() {
  local dir=$1 try
  for try in 1 2 3; do
    PORT=$(free_port)
    "$EDDY" serve --listen "127.0.0.1:$PORT" --data-dir "$dir/data" --http-listen off >"$dir/eddy.log" 2>&1 &
    PID=$!
    for _ in $(seq 1 300); do
      grep -q "eddy is serving Kafka clients" "$dir/eddy.log" 2>/dev/null && return 0
      kill -0 "$PID" 2>/dev/null || break
      sleep 0.1
    done
    kill -9 "$PID" 2>/dev/null; wait "$PID" 2>/dev/null
  done
  return 1
}

# Stops the broker with SIGTERM (as an operator would) and checks it exited cleanly.
stop_broker() {
  kill -TERM "$PID" 2>/dev/null
  for _ in $(seq 1 200); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$PID" 2>/dev/null; then kill -9 "$PID"; wait "$PID" 2>/dev/null; return 1; fi
  wait "$PID"
}

declare -A cell=() detail=()
scenarios=()
add_scenario() { local s; for s in "${scenarios[@]}"; do [ "$s" = "$1" ] && return; done; scenarios+=("$1"); }
for c in "${clients[@]}"; do for s in $(expected "$c"); do add_scenario "$s"; done; done

for c in "${clients[@]}"; do
  f=$(family "$c")
  run="$COMPAT_CACHE/runs/$c"
  rm -rf "$run"; mkdir -p "$run/work"
  if [ "${installed[$f]}" != ok ]; then
    for s in $(expected "$c"); do cell[$c/$s]=FAIL; detail[$c/$s]="install-$f.sh failed"; done
    continue
  fi
  if ! start_broker "$run"; then
    echo "compat: $c: the broker did not start; its log:" >&2; tail -20 "$run/eddy.log" >&2
    for s in $(expected "$c"); do cell[$c/$s]=FAIL; detail[$c/$s]="broker did not start"; done
    failed=1; continue
  fi
  started=$(date +%s)
  echo "compat: $c against eddy on 127.0.0.1:$PORT"
  BOOTSTRAP="127.0.0.1:$PORT" WORK="$run/work" timeout -k 10 300 bash "$here/$c.sh" >"$run/out.log" 2>"$run/err.log"
  rc=$?
  secs=$(( $(date +%s) - started ))
  stop_broker; stopped=$?
  bad=0
  while IFS=$'\t' read -r tag client scenario result text; do
    [ "$tag" = MATRIX ] || continue
    if [ "$client" != "$c" ] || [ -n "${cell[$c/$scenario]:-}" ]; then
      echo "compat: $c: unexpected report (client '$client', scenario '$scenario' already reported or not its own)" >&2
      bad=1
    fi
    # Only "ok" passes; anything else a program prints is a failure.
    [ "$result" = ok ] || result=FAIL
    add_scenario "$scenario"
    cell[$c/$scenario]=$result; detail[$c/$scenario]=$text
  done <"$run/out.log"
  for s in $(expected "$c"); do
    [ -n "${cell[$c/$s]:-}" ] || { cell[$c/$s]=FAIL; detail[$c/$s]="not reported (exit $rc after ${secs}s)"; }
  done
  for s in "${scenarios[@]}"; do [ "${cell[$c/$s]:-}" = FAIL ] && bad=1; done
  [ $rc -eq 0 ] || bad=1
  if grep -q "panicked" "$run/eddy.log"; then bad=1; echo "compat: $c: THE BROKER PANICKED" >&2; fi
  # A request the broker could not decode closes the connection; a client
  # may retry and pass, so the broker's log is checked too.
  if grep -q "bad request; closing the connection" "$run/eddy.log"; then bad=1; echo "compat: $c: the broker closed a connection on a request it could not serve:" >&2; grep "bad request" "$run/eddy.log" | head -5 >&2; fi
  [ $stopped -eq 0 ] || { bad=1; echo "compat: $c: the broker did not stop cleanly on SIGTERM" >&2; }
  echo "compat: $c finished in ${secs}s (exit $rc)"
  if [ $bad -ne 0 ]; then
    failed=1
    echo "---- $c: stderr (last 40 lines) ----" >&2; tail -40 "$run/err.log" >&2
    echo "---- $c: broker log (last 20 lines) ----" >&2; tail -20 "$run/eddy.log" >&2
  fi
done

# Columns in a fixed order, then any scenario a client added.
ordered=()
for s in admin metadata produce consume consume-group commit-resume transactions; do
  for t in "${scenarios[@]}"; do [ "$t" = "$s" ] && ordered+=("$s"); done
done
for t in "${scenarios[@]}"; do
  case " ${ordered[*]} " in *" $t "*) ;; *) ordered+=("$t") ;; esac
done
scenarios=("${ordered[@]}")

# The matrix, as a Markdown table (also written to $COMPAT_CACHE/matrix.md).
{
  printf '| client |'; for s in "${scenarios[@]}"; do printf ' %s |' "$s"; done; echo
  printf '|---|'; for _ in "${scenarios[@]}"; do printf -- '---|'; done; echo
  for c in "${clients[@]}"; do
    printf '| %s |' "$c"
    for s in "${scenarios[@]}"; do printf ' %s |' "${cell[$c/$s]:-–}"; done; echo
  done
} | tee "$COMPAT_CACHE/matrix.md"
for c in "${clients[@]}"; do
  for s in "${scenarios[@]}"; do
    [ -n "${cell[$c/$s]:-}" ] && printf '  %-16s %-14s %-4s %s\n' "$c" "$s" "${cell[$c/$s]}" "${detail[$c/$s]}"
  done
done
exit $failed
