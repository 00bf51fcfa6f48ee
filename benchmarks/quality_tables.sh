#!/usr/bin/env bash
# The README's test-set quality tables: build the two 12-mixture test sets, enhance them with each method,
# score every output folder with jaxse.evaluate and gather one table per set with jaxse.compare.
#
#   bash benchmarks/quality_tables.sh [RUN ...]      RUN: name=method[:checkpoint]; default: the README's runs
#
# Run from the repository root with the project installed ("[eval]" extra for DNSMOS). Every step resumes:
# finished enhanced files are skipped, so an interrupted run continues where it stopped. Data and outputs:
# ../shared/data (or $JAXSE_SHARED/data) -> runs/eval/. Hours on a 2-core CPU (see the README's RTFs).
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${JAXSE_SHARED:-../shared}
D=$SHARED/data
E=runs/eval
[ -d "$D/test" ] || { echo "quality_tables: error: no data pack at $D (set JAXSE_SHARED)" >&2; exit 1; }

python -m jaxse.mix --clean "$D/test" --noise "$D/noise/train" -o $E/test12_matched --snr -5 0 5 --seed 0 --max-files 12
python -m jaxse.mix --clean "$D/test" --noise "$D/noise/test" -o $E/test12_mismatched --snr -5 0 5 --seed 0 --max-files 12
[ -f runs/rvae_published/rvae.json ] ||
  python -m jaxse.rvae_convert "$SHARED/golden/rvae_pretrained.npz" -o runs/rvae_published

if [ $# -eq 0 ]; then
  set -- udiffse+=udiffse+ \
    rvae-vem-published=rvae-vem:runs/rvae_published rvae-mhem-published=rvae-mhem:runs/rvae_published \
    rvae-malaem-published=rvae-malaem:runs/rvae_published rvae-ldem-published=rvae-ldem:runs/rvae_published \
    rvae-vem-shipped=rvae-vem rvae-mhem-shipped=rvae-mhem rvae-malaem-shipped=rvae-malaem rvae-ldem-shipped=rvae-ldem
fi
names=()
for run in "$@"; do
  name=${run%%=*}; spec=${run#*=}; method=${spec%%:*}; ckpt=${spec#"$method"}; ckpt=${ckpt#:}
  names+=("$name")
  for set in matched mismatched; do
    out=$E/out/${set}_$name
    python enhance.py $E/test12_$set/noisy -o "$out" --method "$method" --batch-size 1 ${ckpt:+--checkpoint "$ckpt"}
    python -m jaxse.evaluate --enhanced "$out" --clean $E/test12_$set/clean --noisy $E/test12_$set/noisy \
      -o $E/report/${set}_$name --jobs 2 --no-progress
  done
done
for set in matched mismatched; do
  reports=(); for n in "${names[@]}"; do reports+=("$E/report/${set}_$n"); done
  python -m jaxse.compare "${reports[@]}" --names "$(IFS=,; echo "${names[*]}")" -o $E/table_$set.md
done
