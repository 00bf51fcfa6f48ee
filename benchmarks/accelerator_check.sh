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
. benchmarks/wheels.sh
parse_wheels_args accelerator_check.sh "$@"
exec "$PY" -m jaxse.evaluation.accelerator "${args[@]}"
