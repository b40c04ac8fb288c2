#!/usr/bin/env bash
# Run one command on every host of the VM/slice (the same program everywhere, as JAX multi-host expects).
set -euo pipefail
: "${ZONE:?set ZONE}" "${NAME:?set NAME}"
CMD="${1:?usage: launch.sh 'command'}"
gcloud compute tpus tpu-vm ssh "$NAME" --zone "$ZONE" --worker=all --command "source ~/venv/bin/activate && cd ~/jaxeff && $CMD"
