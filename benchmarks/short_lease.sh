#!/usr/bin/env bash
# The short-lease recipe (benchmarks/short_lease.py): on an accelerator lent for ~15 minutes, offline, in <= 12:
# the reduced accelerator check (120 s), ~7 minutes of training of configs/short_lease.py (400 s), the validation
# mixtures enhanced with the new prior and the shipped one (140 s), and one JSON with everything.
#
#   bash benchmarks/short_lease.sh [--wheels DIR] [--data DIR] [--workdir DIR] [--json FILE] [--set GROUP.FIELD=V ...]
#
# --wheels DIR: install the wheels in DIR first, exactly as benchmarks/accelerator_check.sh does (pip --no-index
# --no-deps into a private folder put on PYTHONPATH; see that script for fetching them). --data: the data root
# with train/ (and train_extra/), valid/ and noise/train/ (default $JAXSE_DATA or ../shared/data). Every other
# argument goes to benchmarks/short_lease.py (python3 benchmarks/short_lease.py --help).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
start=$SECONDS
. benchmarks/wheels.sh
parse_wheels_args short_lease.sh "$@"
exec "$PY" benchmarks/short_lease.py --setup-s "$((SECONDS - start))" "${args[@]}"
