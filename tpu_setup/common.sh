#!/usr/bin/env bash
# Shared option parsing and the command runner of the tpu_setup scripts (sourced, not run).
# Every script accepts --dry-run: it prints each command it would run (one per line, shell-quoted) and runs none.
set -euo pipefail

NAME="${NAME:-jaxeff}"
ZONE="${ZONE:-}"
PROJECT="${PROJECT:-}"
TYPE="${TYPE:-v5litepod-8}"
VERSION="${VERSION:-v2-alpha-tpuv5-lite}"
WORKERS="${WORKERS:-1}"
DRY_RUN="${DRY_RUN:-0}"
REST=()

usage_common() {
  cat <<'USAGE'
common options:
  --name NAME        TPU VM / slice name (default: jaxeff, or $NAME)
  --zone ZONE        zone, e.g. us-central2-b (required for gcloud commands, or $ZONE)
  --project PROJECT  GCP project (default: gcloud's configured project, or $PROJECT)
  --type TYPE        accelerator type, e.g. v5litepod-8 (one host) or v5p-32 (a 4-host slice) (default: v5litepod-8)
  --version VERSION  TPU VM software version (default: v2-alpha-tpuv5-lite)
  --workers N        hosts in the slice, for collect.sh (default: 1)
  --dry-run          print every command instead of running it
  -h, --help         this help
USAGE
}

parse_common() {
  while [ $# -gt 0 ]; do
    case "$1" in
      --name) NAME="$2"; shift 2 ;;
      --zone) ZONE="$2"; shift 2 ;;
      --project) PROJECT="$2"; shift 2 ;;
      --type) TYPE="$2"; shift 2 ;;
      --version) VERSION="$2"; shift 2 ;;
      --workers) WORKERS="$2"; shift 2 ;;
      --dry-run) DRY_RUN=1; shift ;;
      -h|--help) usage; exit 0 ;;
      --) shift; REST+=("$@"); break ;;
      *) REST+=("$1"); shift ;;
    esac
  done
}

die() { echo "tpu_setup: error: $*" >&2; exit 2; }

need_zone() { [ -n "$ZONE" ] || die "--zone (or \$ZONE) is required"; }

# The gcloud TPU VM flags every command shares.
tpu_flags() {
  TPU_FLAGS=(--zone "$ZONE")
  if [ -n "$PROJECT" ]; then TPU_FLAGS+=(--project "$PROJECT"); fi
}

# run CMD ARGS...: print the command (shell-quoted); run it unless --dry-run.
run() {
  local quoted
  printf -v quoted '%q ' "$@"
  echo "+ ${quoted% }"
  if [ "$DRY_RUN" != 1 ]; then "$@"; fi
}
