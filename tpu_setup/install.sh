#!/usr/bin/env bash
# Copy this checkout to every host of the VM/slice and install it with the tpu extra.
set -euo pipefail
: "${ZONE:?set ZONE}" "${NAME:?set NAME}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
tar -C "$ROOT" --exclude .venv --exclude .git -czf /tmp/jaxeff.tgz .
gcloud compute tpus tpu-vm scp /tmp/jaxeff.tgz "$NAME":~/jaxeff.tgz --zone "$ZONE" --worker=all
gcloud compute tpus tpu-vm ssh "$NAME" --zone "$ZONE" --worker=all --command \
  'mkdir -p ~/jaxeff && tar -C ~/jaxeff -xzf ~/jaxeff.tgz && python3 -m venv ~/venv && ~/venv/bin/pip install -q -e "$HOME/jaxeff[tpu]"'
