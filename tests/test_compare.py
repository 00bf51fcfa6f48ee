"""``python -m jaxse.compare``: one table from several jaxse.evaluation.evaluate summaries (synthetic summaries)."""

from __future__ import annotations

import json

import pytest

from jaxse.evaluation import compare


def _summary(path, n=4, enhanced=(3.0, 0.6), inputs=(-1.0, 0.5), rtf=12.5, noisy=True):
    """A jaxse.evaluation.evaluate-shaped summary.json with si_sdr and estoi: (enhanced, input) means."""
    def st(mean):
        return {"mean": mean, "ci": 0.1, "n": n, "n_nan": 0}

    overall = {
        "si_sdr": {"enhanced": st(enhanced[0]), "input": st(inputs[0]), "improvement": st(enhanced[0] - inputs[0])},
        "estoi": {"enhanced": st(enhanced[1]), "input": st(inputs[1]), "improvement": st(enhanced[1] - inputs[1])},
        "rtf": {"total": rtf, "per_file": st(rtf)},
    }
    if not noisy:
        overall = {k: {"enhanced": v["enhanced"]} if k != "rtf" else v for k, v in overall.items()}
    path.mkdir(parents=True)
    (path / "summary.json").write_text(json.dumps({
        "num_files": n, "metrics": ["si_sdr", "estoi"], "overall": overall,
        "inputs": {"noisy": "noisy" if noisy else None}}))
    return path


def test_table_rows_values_and_improvements(tmp_path):
    a = _summary(tmp_path / "udiffse+", enhanced=(3.0, 0.6))
    b = _summary(tmp_path / "rvae-ldem", enhanced=(1.25, 0.55), rtf=0.8)
    text = compare.table([a, b])
    lines = text.splitlines()
    assert lines[0].startswith("| method | n | SI-SDR (dB) | ESTOI | RTF |")  # absent metrics are dropped
    assert lines[2] == "| input (noisy) | 4 | -1.00 | 0.500 | |"
    assert lines[3] == "| udiffse+ | 4 | 3.00 (+4.00) | 0.600 (+0.100) | 12.5 |"
    assert lines[4] == "| rvae-ldem | 4 | 1.25 (+2.25) | 0.550 (+0.050) | 0.8 |"
    named = compare.table([a, b], names=["UDiffSE+", "LDEM"])
    assert "| UDiffSE+ | 4 |" in named and "| LDEM | 4 |" in named


def test_reports_of_different_test_sets_are_refused(tmp_path):
    a = _summary(tmp_path / "a")
    with pytest.raises(compare.CompareError, match="different input si_sdr"):
        compare.table([a, _summary(tmp_path / "b", inputs=(-1.5, 0.5))])
    with pytest.raises(compare.CompareError, match="scores 5 files"):
        compare.table([a, _summary(tmp_path / "c", n=5)])
    with pytest.raises(compare.CompareError, match="2 names for 1 reports"):
        compare.table([a], names=["x", "y"])


def test_without_noisy_inputs_no_input_row(tmp_path):
    text = compare.table([_summary(tmp_path / "a", noisy=False)])
    assert "input (noisy)" not in text and "| a | 4 | 3.00 | 0.600 | 12.5 |" in text


def test_cli_writes_table_and_one_error_line(tmp_path, capsys):
    a = _summary(tmp_path / "a")
    out = tmp_path / "t.md"
    assert compare.main([str(a), "--metrics", "si_sdr", "-o", str(out)]) == 0
    assert out.read_text() == capsys.readouterr().out and "ESTOI" not in out.read_text()
    assert compare.main([str(tmp_path / "nope")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("compare: error:") and "no summary.json" in err[0]
