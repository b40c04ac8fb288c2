#!/usr/bin/env bash
# Create a TPU VM or pod slice. Needs the gcloud CLI, run from your workstation.
set -euo pipefail
: "${ZONE:?set ZONE}" "${NAME:?set NAME}" "${TYPE:=v5litepod-8}" "${VERSION:=v2-alpha-tpuv5-lite}"
gcloud compute tpus tpu-vm create "$NAME" --zone "$ZONE" --accelerator-type "$TYPE" --version "$VERSION"
