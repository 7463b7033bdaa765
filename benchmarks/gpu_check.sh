#!/usr/bin/env bash
# A prepared check for a machine with one NVIDIA GPU, 16 cores, Python 3.12 and a
# preinstalled torch, and no network. Runs from the source tree (PYTHONPATH), never
# installs torch, and installs the project's other needs only from the wheels carried
# beside it in benchmarks/wheels/ (into benchmarks/.gpu-site, not into the system), and
# only those whose module does not import already. Prints one table
# (benchmarks/gpu_check.py); without a GPU it runs the CPU fallbacks, which say so.
#
#   benchmarks/gpu_check.sh              # on the GPU machine: under 8 minutes
#   PYTHON=.venv/bin/python benchmarks/gpu_check.sh   # here: CPU fallbacks, under 3 minutes
#
# The wheels (48 MB for Python 3.12 on Linux x86_64, numpy excluded; benchmarks/gpu_check_wheels.txt
# lists them), fetched on a machine with network:
#
#   pip download --only-binary=:all: --no-deps --python-version 3.12 \
#       --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
#       -d benchmarks/wheels -r benchmarks/gpu_check_wheels.txt
#
# torchvision is not among them: it must match the preinstalled torch
# (`pip download torchvision==<the pair of that torch> --no-deps ...`, ~7 MB) when
# it is missing. Ray (~79 MB) does not fit the 60 MB budget: put its wheel (and
# grpcio's) in benchmarks/wheels/ by hand to get the Ray row, else that row says "not run".
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
WHEELS=benchmarks/wheels
SITE=benchmarks/.gpu-site
export PYTHONPATH="$PWD:$PWD/$SITE${PYTHONPATH:+:$PYTHONPATH}"

"$PY" -c "import torch" 2>/dev/null || { echo "gpu_check: torch must be preinstalled (this script never installs it)" >&2; exit 2; }
missing=()
while read -r module package; do
    [[ -z "$module" || "$module" == \#* ]] && continue
    "$PY" -c "import $module" 2>/dev/null || missing+=("$package")
done < benchmarks/gpu_check_modules.txt
if (( ${#missing[@]} )); then
    echo "gpu_check: installing from $WHEELS into $SITE: ${missing[*]}" >&2
    "$PY" -m pip install -q --no-index --no-deps --find-links "$WHEELS" --target "$SITE" "${missing[@]}" || {
        echo "gpu_check: a wheel is missing from $WHEELS; fetch them as the header of $0 says" >&2; exit 2; }
fi
exec timeout 470 "$PY" benchmarks/gpu_check.py "$@"
