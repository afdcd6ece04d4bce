#!/usr/bin/env bash
# Static validation of the deployment files (docker-compose.yml, deploy/Dockerfile,
# deploy/k8s): no Docker engine or cluster needed, and no network once the tools are in.
#
# First run installs, into .local/deploy-tools (git-ignored):
#   - kustomize, kubeconform and deploy-check, built from tools/deploy-check (Go modules
#     pinned by its go.sum, fetched through the Go module proxy);
#   - a Python venv with deploy/validate/requirements.txt (kubernetes-validate ships
#     the Kubernetes JSON schemas inside the package);
#   - promtool, when none is on the PATH, unpacked from the Debian package prometheus;
#   - the JSON schemas kubeconform reads (deploy/validate/schemas.py): Kubernetes' from
#     kubernetes-validate, the operators' from their CRDs, whose Go modules
#     deploy/validate/crds.txt pins.
# Later runs reuse them; each is rebuilt only when its pinned inputs change.
#
# Usage: scripts/validate-deploy.sh        (exit status non-zero when a check fails)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools="$root/.local/deploy-tools"
mkdir -p "$tools/bin"

log() { printf 'validate-deploy: %s\n' "$*" >&2; }

# --- Go tools -----------------------------------------------------------------------------
go_bin="$(command -v go || true)"
[[ -z "$go_bin" && -x /usr/local/go/bin/go ]] && go_bin=/usr/local/go/bin/go
go_src="$root/tools/deploy-check"
go_stamp="$(cat "$go_src/go.mod" "$go_src/go.sum" "$go_src"/*.go | sha256sum | cut -d' ' -f1)"
if [[ "$(cat "$tools/go.stamp" 2>/dev/null)" != "$go_stamp" || ! -x "$tools/bin/kustomize" \
      || ! -x "$tools/bin/kubeconform" || ! -x "$tools/bin/deploy-check" ]]; then
  if [[ -z "$go_bin" ]]; then
    log "Go is not installed (needed once, to build kustomize, kubeconform and deploy-check)"
    exit 1
  fi
  log "building kustomize, kubeconform and deploy-check (first run only)"
  (
    cd "$go_src"
    export GOTOOLCHAIN=local GOFLAGS="-mod=readonly -buildvcs=false"
    "$go_bin" build -trimpath -o "$tools/bin/deploy-check" .
    "$go_bin" build -trimpath -o "$tools/bin/kustomize" sigs.k8s.io/kustomize/kustomize/v5
    "$go_bin" build -trimpath -o "$tools/bin/kubeconform" github.com/yannh/kubeconform/cmd/kubeconform
  )
  echo "$go_stamp" > "$tools/go.stamp"
fi

# --- Python tools -------------------------------------------------------------------------
venv="$tools/venv"
req="$root/deploy/validate/requirements.txt"
py_stamp="$( (cat "$req"; python3 --version) | sha256sum | cut -d' ' -f1)"
if [[ "$(cat "$tools/py.stamp" 2>/dev/null)" != "$py_stamp" || ! -x "$venv/bin/python" ]]; then
  log "installing Python packages into $venv (first run only)"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input -r "$req"
  echo "$py_stamp" > "$tools/py.stamp"
fi

# --- promtool ------------------------------------------------------------------------------
# For the alert rules (check and unit tests). One on the PATH is used as it is; otherwise the
# Debian package `prometheus` is downloaded (not installed: no server, no root for this step)
# and promtool unpacked from it into $tools.
promtool="$(command -v promtool || true)"
if [[ -z "$promtool" ]]; then
  promtool="$tools/prometheus/usr/bin/promtool"
  if [[ ! -x "$promtool" ]]; then
    log "unpacking promtool from the Debian package prometheus (first run only)"
    download_dir="$(mktemp -d)"
    fetch() { (cd "$download_dir" && apt-get download -q prometheus >/dev/null 2>&1); }
    if ! fetch; then
      # Fresh machines may have no package lists yet.
      if [[ $EUID -eq 0 ]]; then apt-get update -q >/dev/null 2>&1 || true; else sudo -n apt-get update -q >/dev/null 2>&1 || true; fi
      fetch || { log "could not download the Debian package prometheus (for promtool)"; exit 1; }
    fi
    rm -rf "$tools/prometheus"
    dpkg-deb -x "$download_dir"/prometheus_*.deb "$tools/prometheus"
    rm -rf "$download_dir"
  fi
fi

# --- Checks -------------------------------------------------------------------------------
exec "$venv/bin/python" "$root/deploy/validate/validate.py" \
  --kustomize "$tools/bin/kustomize" \
  --deploy-check "$tools/bin/deploy-check" \
  --kubeconform "$tools/bin/kubeconform" \
  --go "${go_bin:-go}" \
  --schema-cache "$tools/schemas" \
  --promtool "$promtool"
