#!/usr/bin/env bash
# FER-SSL Workbench set-up + entry point. Installs what is missing, then runs one job:
#
#   bash bootstrap.sh demo     # venv + packages + Chromium (for figure export), then `workbench demo`
#   bash bootstrap.sh test     # same install (+ test extras), then the whole test suite
#   bash bootstrap.sh lab      # JupyterLab on the notebooks (loopback + token)
#   bash bootstrap.sh -- ARGS  # any `workbench ARGS`
#
# Environment: PYTHON (default python3), WORKBENCH_VENV (default .venv), DEMO_OUT (default runs/demo).
# Re-running is cheap: packages are reinstalled only when pyproject.toml changes.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

job="${1:-demo}"
[ $# -gt 0 ] && shift
PYTHON="${PYTHON:-python3}"
VENV="${WORKBENCH_VENV:-.venv}"

log() { printf '[bootstrap] %s\n' "$*" >&2; }

if [ ! -x "$VENV/bin/python" ]; then
  log "creating virtual environment $VENV"
  "$PYTHON" -m venv "$VENV"
fi
want="$(sha256sum pyproject.toml | cut -c1-16)"
stamp="$VENV/.workbench-installed"
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
  log "installing the workbench and its dependencies (torch + torchvision from the registry: a few minutes the first time)"
  "$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
  "$VENV/bin/python" -m pip install -q -e ".[faces,scale,test]" 2>&1 | grep -v "is ignored: it is neither" || true
  "$VENV/bin/python" -c "import torch, torchvision, timm, workbench" \
    || { log "installation failed (see the messages above)"; exit 1; }
  echo "$want" > "$stamp"
fi

# Chromium: kaleido (static figure export) and the real-browser notebook test need it.
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    log "installing Chromium (Debian packages chromium, chromium-driver)"
    (apt-get install -y -q chromium chromium-driver >/dev/null 2>&1 \
      || (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium chromium-driver >/dev/null 2>&1)) \
      || log "could not install Chromium: figures fall back to matplotlib, the browser test is skipped"
  else
    log "Chromium not found (install 'chromium' for plotly static export); figures fall back to matplotlib"
  fi
fi

export PATH="$PWD/$VENV/bin:$PATH"
case "$job" in
  demo)
    exec workbench demo --out "${DEMO_OUT:-runs/demo}" "$@" ;;
  test)
    exec python -m pytest "$@" ;;
  lab)
    exec workbench lab "$@" ;;
  --)
    exec workbench "$@" ;;
  *)
    log "unknown job '$job' (use demo, test, lab, or -- followed by workbench arguments)"; exit 2 ;;
esac
