#!/usr/bin/env bash
# Create a Cloud TPU VM (one host) or a pod slice (several hosts). Run from your workstation (needs gcloud).
#   bash tpu_setup/create.sh --zone us-central2-b --type v5p-32 --name jaxeff [--spot] [--dry-run]
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=tpu_setup/common.sh
source "$HERE/common.sh"
usage() { echo "usage: create.sh [options]   (--spot: preemptible capacity)"; usage_common; }
SPOT=0
ARGS=()
for a in "$@"; do
  if [ "$a" = --spot ]; then SPOT=1; else ARGS+=("$a"); fi
done
parse_common "${ARGS[@]+"${ARGS[@]}"}"
need_zone
tpu_flags
cmd=(gcloud compute tpus tpu-vm create "$NAME" "${TPU_FLAGS[@]}" --accelerator-type "$TYPE" --version "$VERSION")
if [ "$SPOT" = 1 ]; then cmd+=(--spot); fi
run "${cmd[@]}"
