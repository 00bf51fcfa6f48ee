#!/usr/bin/env bash
# The accelerator check (jaxse.evaluation.accelerator): run on a GPU/TPU machine, offline, in under 10 minutes.
#
#   bash benchmarks/accelerator_check.sh [--wheels DIR] [--quick] [--json FILE] [--budget-s S]
#
# --wheels DIR: install the wheels in DIR first (no network: pip --no-index --no-deps into a private folder put on
# PYTHONPATH), for a machine that lacks jax/jaxlib with its accelerator plugin, flax, optax, ... Fetch them on a
# machine with network access for the target's Python and platform, e.g. for CUDA 12 and Python 3.12:
#   python3 -m pip download --only-binary=:all: --python-version 3.12 --platform manylinux_2_27_x86_64 \
#       --platform manylinux2014_x86_64 -d wheels "jax[cuda12]" flax optax orbax-checkpoint ml-collections soundfile
# (pip resolves the dependencies for that target; carry the folder over with the repository).
# Nothing else is installed: jaxse runs from this checkout (PYTHONPATH), so no build step is needed.
# The numbers are printed and written to --json (default accelerator_check.json), item by item.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
args=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --wheels)
            [[ $# -ge 2 && -d "$2" ]] || { echo "accelerator_check.sh: error: --wheels needs a folder of wheels" >&2; exit 2; }
            site="${TMPDIR:-/tmp}/jaxse-check-site"
            python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" "$2"/*.whl
            export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
            shift 2;;
        *) args+=("$1"); shift;;
    esac
done
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY="${PYTHON:-python3}"
"$PY" -c "import jax; print('jax', jax.__version__, 'on', jax.default_backend(), jax.devices())"
exec "$PY" -m jaxse.evaluation.accelerator "${args[@]}"
