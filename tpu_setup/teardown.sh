#!/usr/bin/env bash
# Delete the TPU VM / slice (stops the billing). Collect results first.
#   bash tpu_setup/teardown.sh --zone us-central2-b --name jaxeff [--dry-run]
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=tpu_setup/common.sh
source "$HERE/common.sh"
usage() { echo "usage: teardown.sh [options]"; usage_common; }
parse_common "$@"
need_zone
tpu_flags
run gcloud compute tpus tpu-vm delete "$NAME" "${TPU_FLAGS[@]}" --quiet
