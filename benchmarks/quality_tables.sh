#!/usr/bin/env bash
# The README's test-set quality tables: build the two 12-mixture test sets, enhance them with each method,
# score every output folder with jaxse.evaluation.evaluate and gather one table per set with jaxse.evaluation.compare.
#
#   bash benchmarks/quality_tables.sh [--per-snr N] [RUN ...]
#
#   RUN          name=method[:checkpoint][;FIELD=VALUE...] (quote it: ";" separates the method's settings,
#                passed on as --config.FIELD=VALUE); default: the README's full-set runs (UDiffSE+ with the
#                reference λ 1.5, the RVAE samplers with the published and the shipped RVAE)
#   --per-snr N  only the first N mixtures of each SNR (manifest order) of each set: they are enhanced into
#                the same output folders as full runs (finished files are reused) and scored as a subset
#                (reports and tables named *_per_snrN)
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

per_snr=
if [ "${1:-}" = --per-snr ]; then
  per_snr=${2:?--per-snr needs a count}; shift 2
  for set in matched mismatched; do  # symlink folders of the subset (same relative paths)
    python - "$E/test12_$set" "$per_snr" <<'PY'
import json, os, sys
from pathlib import Path
root, n = Path(sys.argv[1]), int(sys.argv[2])
counts, sub = {}, root / f"per_snr{n}"
for rec in json.loads((root / "manifest.json").read_text())["mixtures"]:
    if counts.setdefault(rec["snr_db"], 0) < n:
        counts[rec["snr_db"]] += 1
        for kind in ("noisy", "clean"):
            dst = sub / rec[kind]
            dst.parent.mkdir(parents=True, exist_ok=True)
            if not dst.is_symlink():
                os.symlink(os.path.relpath(root / rec[kind], dst.parent), dst)
PY
  done
fi
if [ $# -eq 0 ]; then
  set -- "udiffse+-ref=udiffse+;lmbd=1.5" \
    rvae-vem-published=rvae-vem:runs/rvae_published rvae-mhem-published=rvae-mhem:runs/rvae_published \
    rvae-malaem-published=rvae-malaem:runs/rvae_published rvae-ldem-published=rvae-ldem:runs/rvae_published \
    rvae-vem-shipped=rvae-vem rvae-mhem-shipped=rvae-mhem rvae-malaem-shipped=rvae-malaem rvae-ldem-shipped=rvae-ldem
fi
names=()
suffix=${per_snr:+_per_snr$per_snr}
for run in "$@"; do
  name=${run%%=*}; spec=${run#*=}; base=${spec%%;*}; method=${base%%:*}; ckpt=${base#"$method"}; ckpt=${ckpt#:}
  settings=(); IFS=';' read -ra fields <<< "${spec#"$base"}"
  for f in ${fields[@]+"${fields[@]}"}; do if [ -n "$f" ]; then settings+=("--config.$f"); fi; done
  names+=("$name")
  for set in matched mismatched; do
    out=$E/out/${set}_$name; data=$E/test12_$set${per_snr:+/per_snr$per_snr}
    python enhance.py $data/noisy -o "$out" --method "$method" --batch-size 1 ${ckpt:+--checkpoint "$ckpt"} \
      ${settings[@]+"${settings[@]}"}
    python -m jaxse.evaluate --enhanced "$out" --clean $data/clean --noisy $data/noisy \
      --manifest $E/test12_$set/manifest.json ${per_snr:+--allow-missing} -o $E/report/${set}_$name$suffix \
      --jobs 2 --no-progress
  done
done
for set in matched mismatched; do
  reports=(); for n in "${names[@]}"; do reports+=("$E/report/${set}_$n$suffix"); done
  python -m jaxse.compare "${reports[@]}" --names "$(IFS=,; echo "${names[*]}")" -o $E/table_$set$suffix.md
done
