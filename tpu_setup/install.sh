#!/usr/bin/env bash
# Copy this checkout to every host of the VM / slice and install it there with jax[tpu] (a venv per host).
#   bash tpu_setup/install.sh --zone us-central2-b --name jaxeff [--dry-run]
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=tpu_setup/common.sh
source "$HERE/common.sh"
usage() { echo "usage: install.sh [options]"; usage_common; }
parse_common "$@"
need_zone
tpu_flags
ROOT="$(cd "$HERE/.." && pwd)"
TGZ="${TMPDIR:-/tmp}/jaxeff-src.tgz"
run tar -C "$ROOT" --exclude .venv --exclude .git --exclude runs -czf "$TGZ" .
run gcloud compute tpus tpu-vm scp "$TGZ" "$NAME:~/jaxeff-src.tgz" "${TPU_FLAGS[@]}" --worker=all
# shellcheck disable=SC2016  # $HOME expands on the hosts
REMOTE='set -e; mkdir -p ~/jaxeff && tar -C ~/jaxeff -xzf ~/jaxeff-src.tgz && python3 -m venv ~/venv && ~/venv/bin/pip install -q --upgrade pip && ~/venv/bin/pip install -q -e "$HOME/jaxeff[tpu]" && ~/venv/bin/python -c "import jax; print(jax.process_index(), jax.device_count(), jax.devices()[0].platform)"'
run gcloud compute tpus tpu-vm ssh "$NAME" "${TPU_FLAGS[@]}" --worker=all --command "$REMOTE"
