"""benchmarks/tune_valid.py: settings parsing, the test-set refusal, and one short sweep on real mixtures."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import tune_valid  # noqa: E402


def test_parse_setting_checks_fields_per_method():
    assert tune_valid.parse_setting("method=udiffse+,lmbd=2.5,chunk_frames=256") == {
        "method": "udiffse+", "lmbd": 2.5, "chunk_frames": 256}
    assert tune_valid.parse_setting("num_em=3") == {"method": "udiffse", "num_em": 3}
    assert tune_valid.parse_setting("method=rvae-ldem,num_em=30")["num_em"] == 30
    for bad in ("method=udiffse+,bogus=1", "method=rvae-vem,lmbd=2", "method=nope", "lmbd"):
        with pytest.raises(SystemExit):
            tune_valid.parse_setting(bad)


@pytest.fixture(scope="module")
def valid_mix(data_dir, tmp_path_factory) -> Path:
    from jaxse.evaluation import mix

    out = tmp_path_factory.mktemp("valid_mix")
    assert mix.main(["--clean", str(data_dir / "valid"), "--noise", str(data_dir / "noise" / "train"), "-o",
                     str(out), "--snr", "0", "5", "--seed", "0", "--max-files", "2"]) == 0
    return out


def test_refuses_test_speech(data_dir, tmp_path):
    from jaxse.evaluation import mix

    out = tmp_path / "test_mix"
    assert mix.main(["--clean", str(data_dir / "test"), "--noise", str(data_dir / "noise" / "train"), "-o",
                     str(out), "--snr", "0", "--seed", "0", "--max-files", "1"]) == 0
    with pytest.raises(SystemExit, match="test speech"):
        tune_valid.main([str(out), "method=udiffse+"])


@pytest.mark.slow  # enhances a valid set per setting, ~25 s
def test_sweep_scores_every_setting_and_checkpoint(valid_mix, tmp_path, fast_compile, capsys):
    out = tmp_path / "sweep.json"
    rc = tune_valid.main([str(valid_mix), "method=udiffse+,num_steps=2,num_samples=1,chunk_frames=128",
                          "method=rvae-ldem,num_em=2", "--json", str(out)])
    assert rc == 0
    report = json.loads(out.read_text())
    assert report["num_mixtures"] == 2 and np.isfinite(report["input_estoi"])
    rows = report["results"]
    assert [r["settings"]["method"] for r in rows] == ["udiffse+", "rvae-ldem"]
    assert rows[0]["nfe"] == 4 and rows[0]["settings"]["chunk_frames"] == 128
    for r in rows:
        assert r["checkpoint"] == "shipped" and len(r["per_file"]) == 2 and r["rtf"] > 0
        assert np.isfinite(r["si_sdr_gain"]) and np.isfinite(r["estoi_gain"])
    printed = capsys.readouterr().out
    assert "ESTOI" in printed and "RTF" in printed
