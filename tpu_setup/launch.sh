#!/usr/bin/env bash
# Run one command on every host of the VM / slice: the same program everywhere, as multi-host JAX expects.
# jaxeff's trainer calls jax.distributed.initialize() itself when given distributed=true (Cloud TPU detects the
# coordinator, process count and index by itself).
#   bash tpu_setup/launch.sh --zone us-central2-b -- jaxeff train --config preset:smoke --out ~/runs/a distributed=true
#   bash tpu_setup/launch.sh --zone us-central2-b -- 'jaxeff sweep --out ~/sweep --shard "$TPU_WORKER_ID/4" ...'
# (one quoted string goes to the hosts' shell as is; several words are quoted one by one)
# --local N runs N processes on this machine instead, joined over loopback (JAXEFF_COORDINATOR=127.0.0.1:PORT,
# JAXEFF_NUM_PROCESSES, JAXEFF_PROCESS_ID; CPU collectives over gloo): the launch path without a TPU.
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=tpu_setup/common.sh
source "$HERE/common.sh"
usage() {
  echo "usage: launch.sh [options] [--local N [--port PORT]] -- COMMAND..."
  usage_common
}
LOCAL=0
PORT="${PORT:-12355}"
ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --local) LOCAL="$2"; shift 2 ;;
    --port) PORT="$2"; shift 2 ;;
    *) ARGS+=("$1"); shift ;;
  esac
done
parse_common "${ARGS[@]+"${ARGS[@]}"}"
[ "${#REST[@]}" -gt 0 ] || die "no command given (put it after --)"
if [ "$LOCAL" -gt 0 ] 2>/dev/null; then
  pids=()
  for ((i = 0; i < LOCAL; i++)); do
    run env JAXEFF_COORDINATOR="127.0.0.1:$PORT" JAXEFF_NUM_PROCESSES="$LOCAL" JAXEFF_PROCESS_ID="$i" "${REST[@]}" &
    pids+=("$!")
  done
  status=0
  for p in "${pids[@]}"; do wait "$p" || status=$?; done
  exit "$status"
fi
[ "$LOCAL" = 0 ] || die "--local needs a positive process count, got $LOCAL"
need_zone
tpu_flags
if [ "${#REST[@]}" -eq 1 ]; then
  CMD="${REST[0]}"  # one string: the hosts' shell reads it as is ($TPU_WORKER_ID expands there)
else
  printf -v CMD '%q ' "${REST[@]}"
  CMD="${CMD% }"
fi
run gcloud compute tpus tpu-vm ssh "$NAME" "${TPU_FLAGS[@]}" --worker=all --command "source ~/venv/bin/activate && cd ~/jaxeff && $CMD"
