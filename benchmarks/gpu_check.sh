#!/usr/bin/env bash
# One GPU's check of noisetune in under 5 minutes (README, "GPU check"): the noise's tests
# on the device, its step-time ratio, stacked trials per hour, --batch auto and a 40-trial
# paper study, printed as one table by benchmarks/gpu_check.py. Exit status 1 when a
# correctness check fails; missed speed targets only print as "missed".
#
#   bash benchmarks/gpu_check.sh [--wheels DIR] [--python PY] [--device cuda|cuda:N|cpu] [...]
#
# --wheels DIR  install the wheels listed in benchmarks/gpu_check_wheels.txt from DIR (no
#               index, no dependency resolution) into a temporary folder on PYTHONPATH: for a
#               machine with Python, PyTorch and scikit-learn but no registry.
# --python PY   the interpreter (default: .venv/bin/python if there, else python3).
# --device      cuda (default), cuda:N, or cpu at tiny sizes (CI runs that).
# Anything else goes to gpu_check.py (--budget-scale F, --help). The project is not
# installed: its root goes on PYTHONPATH, so `python -m worker` works from anywhere.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
wheels=""
python=""
device="cuda"
rest=()
while [ $# -gt 0 ]; do
    case "$1" in
        --wheels) wheels="${2:?--wheels needs a directory}"; shift 2 ;;
        --wheels=*) wheels="${1#*=}"; shift ;;
        --python) python="${2:?--python needs an interpreter}"; shift 2 ;;
        --python=*) python="${1#*=}"; shift ;;
        --device) device="${2:?--device needs cuda, cuda:N or cpu}"; shift 2 ;;
        --device=*) device="${1#*=}"; shift ;;
        *) rest+=("$1"); shift ;;
    esac
done
if [ -z "$python" ]; then
    if [ -x "$root/.venv/bin/python" ]; then python="$root/.venv/bin/python"; else python=python3; fi
fi

pythonpath="$root"
if [ -n "$wheels" ]; then
    if [ ! -d "$wheels" ]; then
        echo "gpu_check.sh: --wheels $wheels is not a directory" >&2
        exit 2
    fi
    site="$(mktemp -d "${TMPDIR:-/tmp}/noisetune-gpu-check-site.XXXXXX")"
    trap 'rm -rf "$site"' EXIT
    echo "gpu_check.sh: installing the wheels from $wheels" >&2
    # --find-links with the list rather than DIR/*.whl: DIR may hold wheels for several
    # Pythons, and only the listed packages go in, never a second numpy or torch.
    "$python" -m pip install -q --disable-pip-version-check --no-index --no-deps \
        --find-links "$wheels" --target "$site" -r "$root/benchmarks/gpu_check_wheels.txt"
    pythonpath="$pythonpath:$site"
fi
export PYTHONPATH="$pythonpath${PYTHONPATH:+:$PYTHONPATH}"

cd "$root"
"$python" benchmarks/gpu_check.py --device "$device" ${rest[@]+"${rest[@]}"}
