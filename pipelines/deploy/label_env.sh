#!/usr/bin/env bash
# Build (or reuse) the MONAI Label environment for the ResUNet bundles: a venv OUTSIDE the repository with
# torch 2.14.1 + torchvision 0.29.1, monailabel 0.8.5 (--no-deps) and its real imports, and monai_resunet
# (editable, --no-deps) with what it needs there. Pins: pipelines/deploy/requirements-label.txt.
#
#   bash pipelines/deploy/label_env.sh     # prints the venv path on its last line
#
# Environment:
#   MONAI_RESUNET_LABEL_VENV   the venv (default: ${MONAI_RESUNET_CACHE:-$HOME/.cache/monai_resunet}/label-venv)
#   MONAI_RESUNET_CACHE        cache folder holding the default venv
#   LABEL_PYTHON               interpreter to create it with (default: python3.11, else python3)
#   LABEL_ENV_REBUILD=1        delete and rebuild the venv
#
# Reuse: an existing venv whose stamp matches the requirements file and that passes the import check is kept
# (seconds); one whose editable monai_resunet points at another checkout is re-pointed here; anything else is
# re-installed in place (pip skips what is already satisfied), and a venv that does not run is rebuilt.
# A fresh build takes ~2-3 minutes here (torch and torchvision come from this machine's local wheel mirror,
# ~5.5 GB installed); it needs PyPI for monailabel and the small packages.
set -euo pipefail
start=$(date +%s)
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
REQ="$REPO/pipelines/deploy/requirements-label.txt"
CACHE="${MONAI_RESUNET_CACHE:-$HOME/.cache/monai_resunet}"
VENV="${MONAI_RESUNET_LABEL_VENV:-$CACHE/label-venv}"
PY="$VENV/bin/python"
STAMP="$VENV/.monai_resunet_label_requirements"
PIP=(-m pip install --quiet --disable-pip-version-check --no-input)

log() { echo "[label_env] $*" >&2; }
elapsed() { echo "$(( $(date +%s) - start ))"; }

case "$VENV" in
    "$REPO"|"$REPO"/*) log "refusing to build the venv inside the repository ($VENV)"; exit 2 ;;
esac

# The check: every module the server, the app, training and scoring import, the pinned versions, and
# monai_resunet imported from THIS checkout.
check_env() {
    "$PY" -P - "$REPO" <<'EOF'
import importlib.metadata as md
import os
import sys

import monai_resunet
import monai_resunet.label.app  # noqa: F401  (imports monailabel's tasks, torchvision, itk, ...)
import monailabel.app  # noqa: F401  (the FastAPI app: every endpoint and datastore module)
import monailabel.interfaces.utils.app  # noqa: F401  (what training/scoring subprocesses run)
import tensorboard  # noqa: F401
import matplotlib  # noqa: F401
import dcmqi  # noqa: F401  (itkimage2segimage for the DICOMweb datastore's DICOM-SEG)

if not os.access(os.path.join(os.path.dirname(sys.executable), "itkimage2segimage"), os.X_OK):
    sys.exit("dcmqi's itkimage2segimage is missing beside the venv's python")

want = {"monailabel": "0.8.5", "torch": "2.14.1", "torchvision": "0.29.1", "monai": "1.6.1"}
got = {k: md.version(k).split("+")[0] for k in want}
bad = {k: v for k, v in got.items() if v != want[k]}
if bad:
    sys.exit(f"wrong versions: {bad} (want {want})")
if int(md.version("pydicom").split(".")[0]) >= 3:
    sys.exit("pydicom >= 3 breaks monailabel 0.8.5")
here = os.path.realpath(sys.argv[1])
if not os.path.realpath(monai_resunet.__file__).startswith(here + os.sep):
    sys.exit(f"REPOINT monai_resunet is imported from {monai_resunet.__file__}, not {here}")
EOF
}

req_hash() { sha256sum "$REQ" | cut -d' ' -f1; }

if [[ "${LABEL_ENV_REBUILD:-0}" == 1 && -d "$VENV" ]]; then
    log "LABEL_ENV_REBUILD=1: removing $VENV"
    rm -rf "$VENV"
fi

if [[ -x "$PY" ]] && ! "$PY" -c "import sys" 2>/dev/null; then
    log "$VENV does not run; rebuilding"
    rm -rf "$VENV"
fi

if [[ -x "$PY" && -f "$STAMP" && "$(cat "$STAMP")" == "$(req_hash)" ]]; then
    if out=$(check_env 2>&1); then
        log "reusing $VENV (checked in $(elapsed) s)"
        echo "$VENV"
        exit 0
    elif [[ "$out" == *REPOINT* ]]; then
        log "re-pointing the editable monai_resunet to $REPO"
        "$PY" "${PIP[@]}" --no-deps -e "$REPO"
        check_env
        log "reusing $VENV (re-pointed in $(elapsed) s)"
        echo "$VENV"
        exit 0
    fi
    log "existing venv failed the check; re-installing: ${out##*$'\n'}"
fi

if [[ ! -x "$PY" ]]; then
    PYTHON="${LABEL_PYTHON:-}"
    if [[ -z "$PYTHON" ]]; then
        PYTHON=$(command -v python3.11 || command -v python3)
    fi
    log "creating $VENV with $("$PYTHON" --version 2>&1) ($PYTHON)"
    mkdir -p "$(dirname "$VENV")"
    "$PYTHON" -m venv "$VENV"
    "$PY" "${PIP[@]}" --upgrade pip
fi

t=$(date +%s)
log "installing pipelines/deploy/requirements-label.txt (torch, torchvision, MONAI, monailabel's imports)"
"$PY" "${PIP[@]}" -r "$REQ" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
log "  done in $(( $(date +%s) - t )) s"
mapfile -t NODEPS < <(sed -n 's/^# nodeps: *//p' "$REQ")
log "installing --no-deps: ${NODEPS[*]} and monai_resunet (editable)"
"$PY" "${PIP[@]}" --no-deps "${NODEPS[@]}" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
"$PY" "${PIP[@]}" --no-deps -e "$REPO" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)

check_env
req_hash > "$STAMP"
log "MONAI Label environment ready in $(elapsed) s: $VENV ($(du -sh "$VENV" 2>/dev/null | cut -f1))"
echo "$VENV"
