"""The evaluation pipeline end to end on real audio: ``jaxse.evaluation.mix`` -> ``enhance.py`` -> ``jaxse.evaluation.evaluate``.

Two test utterances of the shared data pack are mixed with mismatched noise, enhanced with the shipped
prior (UDiffSE+ cut to a few steps so that it runs in seconds) and scored; the report must pair every
file with its manifest record, its enhance-log RTF and finite metrics.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from jaxse.evaluation import evaluate

from jaxse.evaluation import mix

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # mix -> enhance -> evaluate end to end, ~40 s
def test_mix_enhance_evaluate(data_dir, tmp_path):
    sets = tmp_path / "mixed"
    assert mix.main(["--clean", str(data_dir / "test"), "--noise", str(data_dir / "noise" / "test"),
                     "-o", str(sets), "--snr", "0", "5", "--seed", "3", "--max-files", "2"]) == 0
    manifest = json.loads((sets / "manifest.json").read_text())
    assert len(manifest["mixtures"]) == 2

    env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_DISABLE_MOST_OPTIMIZATIONS="1")
    env.pop("XLA_FLAGS", None)
    out = tmp_path / "enhanced"
    proc = subprocess.run(
        [sys.executable, str(REPO / "enhance.py"), str(sets / "noisy"), "-o", str(out), "--method", "udiffse+",
         "--batch-size", "1", "--config.num_steps=6", "--config.num_samples=1", "--noprogress"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]

    report = tmp_path / "report"
    assert evaluate.main(["--enhanced", str(out), "--clean", str(sets / "clean"), "--noisy", str(sets / "noisy"),
                          "-o", str(report), "--metrics", "si_sdr", "pesq_wb", "estoi", "--jobs", "1",
                          "--figures", "1", "--no-progress"]) == 0

    with open(report / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    by_id = {r["file"]: r for r in rows}
    assert len(rows) == 2
    for rec in manifest["mixtures"]:
        row = next(r for name, r in by_id.items() if Path(name).stem == Path(rec["noisy"]).stem)
        assert float(row["snr_db"]) == rec["snr_db"] and row["noise_type"] == rec["noise_type"]
        # The mixture's input SI-SDR is its SNR (the noise is mixed at that SNR; SI-SDR rescales only s).
        assert float(row["input_si_sdr"]) == pytest.approx(rec["snr_db"], abs=1.0)
        for key in ("si_sdr", "pesq_wb", "estoi", "rtf"):
            assert np.isfinite(float(row[key])), key
        assert float(row["rtf"]) > 0

    summary = json.loads((report / "summary.json").read_text())
    text = json.dumps(summary)
    for key in ("si_sdr", "pesq_wb", "estoi"):
        assert key in text
    assert (report / "summary.md").is_file()
    assert list((report / "figures").glob("*.png"))
