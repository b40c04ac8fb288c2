#!/usr/bin/env bash
# Copy a results folder from every host (host K -> DEST/worker-K/), e.g. sweep tables or run folders.
#   bash tpu_setup/collect.sh --zone us-central2-b --workers 4 --from sweep --to results [--dry-run]
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=tpu_setup/common.sh
source "$HERE/common.sh"
usage() { echo "usage: collect.sh [options] --from REMOTE_DIR (relative to ~) --to LOCAL_DIR"; usage_common; }
FROM=""
TO="results"
ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --from) FROM="$2"; shift 2 ;;
    --to) TO="$2"; shift 2 ;;
    *) ARGS+=("$1"); shift ;;
  esac
done
parse_common "${ARGS[@]+"${ARGS[@]}"}"
[ -n "$FROM" ] || die "--from REMOTE_DIR is required"
need_zone
tpu_flags
for ((k = 0; k < WORKERS; k++)); do
  run mkdir -p "$TO/worker-$k"
  run gcloud compute tpus tpu-vm scp --recurse "$NAME:~/$FROM" "$TO/worker-$k/" "${TPU_FLAGS[@]}" --worker="$k"
done
