"""The evaluation CLI end to end on tiny synthetic test sets, and its statistics."""

import csv
import json
import math

import numpy as np
import pytest
import soundfile as sf

from jaxse.evaluation import evaluate as E
from jaxse.evaluation import metrics as M

FS = 16000


def speechlike(seconds, seed=0, f0=140.0):
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * FS)) / FS
    phase = 2 * np.pi * np.cumsum(f0 * (1 + 0.1 * np.sin(2 * np.pi * 0.7 * t))) / FS
    x = sum(np.sin(k * phase + rng.uniform(0, 2 * np.pi)) / k for k in range(1, 25))
    env = np.clip(np.sin(2 * np.pi * 3 * t), 0, None) ** 0.5 * (t > 0.2) * (t < seconds - 0.2)
    return 0.1 * x * env / np.max(np.abs(x))


SNRS = (-5.0, 0.0, 5.0)


def make_set(root, n=3, seconds=2.3, log=True, manifest=True):
    """clean/, noisy/ (at SNRS, two noise types), enh/ (= noisy with the noise scaled by 0.3, as FLAC),
    manifest.json and enh/enhance_log.csv under ``root``."""
    rng = np.random.default_rng(42)
    recs = []
    for i in range(n):
        rel = f"spk{i % 2}/utt{i}"
        s = speechlike(seconds, seed=i, f0=120.0 + 20 * i)
        noise = rng.standard_normal(s.size)
        if i % 2:
            noise = np.convolve(noise, np.ones(8) / 8, mode="same")  # a "lowpass" noise type
        snr = SNRS[i % len(SNRS)]
        g = np.sqrt(np.sum(s**2) / np.sum(noise**2) / 10 ** (snr / 10))
        for sub, sig, ext in (("clean", s, ".wav"), ("noisy", s + g * noise, ".wav"),
                              ("enh", s + 0.3 * g * noise, ".flac")):
            path = root / sub / (rel + ext)
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, sig, FS, subtype="FLOAT" if ext == ".wav" else "PCM_16")
        recs.append({"id": f"m{i}", "noisy": f"noisy/{rel}.wav", "clean": f"clean/{rel}.wav",
                     "noise_type": "white" if i % 2 == 0 else "lowpass", "snr_db": snr, "num_samples": s.size})
    if manifest:
        (root / "manifest.json").write_text(json.dumps({"version": 1, "seed": 0, "snrs": list(SNRS),
                                                        "sample_rate": FS, "mixtures": recs}))
    if log:
        lines = ["file,duration_s,seconds,rtf,status,message"]
        for i in range(n):
            lines.append(f"spk{i % 2}/utt{i}.wav,{seconds:.3f},9.000,,error,first try failed")
            lines.append(f"spk{i % 2}/utt{i}.wav,{seconds:.3f},{0.5 * (i + 1) * seconds:.3f},{0.5 * (i + 1):.4f},ok,")
        (root / "enh" / "enhance_log.csv").write_text("\n".join(lines) + "\n")
    return root


def read_rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def run_cli(capsys, *args):
    rc = E.main([*map(str, args), "--no-progress"])
    return rc, capsys.readouterr().err


# ------------------------------------------------------------------------------------------------


def test_mean_ci_matches_scipy():
    from scipy import stats

    x = [2.1, 2.5, 1.9, 3.0, 2.7, 2.2, float("nan")]
    st = E.mean_ci(x)
    v = np.array(x[:-1])
    lo, hi = stats.t.interval(0.95, len(v) - 1, loc=v.mean(), scale=stats.sem(v))
    assert st["n"] == 6 and st["n_nan"] == 1
    assert st["mean"] == pytest.approx(v.mean())
    assert st["ci"] == pytest.approx((hi - lo) / 2, rel=1e-12)
    assert E.mean_ci([1.0]) == {"mean": 1.0, "ci": None, "n": 1, "n_nan": 0}
    assert E.mean_ci([])["mean"] is None


def test_choose_figures_is_round_robin_over_snrs():
    rows = [{"snr_db": v} for v in (5.0, -5.0, 0.0, -5.0, 5.0, 0.0)]
    assert E.choose_figures(rows, 3) == [1, 2, 0]
    assert E.choose_figures(rows, 5) == [1, 2, 0, 3, 5]
    assert E.choose_figures([{"snr_db": None}] * 10, 3) == [0, 4, 9]  # evenly spaced without SNRs
    assert E.choose_figures(rows, 0) == []


def test_cli_end_to_end(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("matplotlib")
    root = make_set(tmp_path)
    out = tmp_path / "report"
    rc, err = run_cli(capsys, "--enhanced", root / "enh", "--clean", root / "clean", "--noisy", root / "noisy",
                      "-o", out, "--jobs", "1", "--figures", "2")
    assert rc == 0, err
    assert "using the manifest" in err and "evaluated 3 files" in err

    rows = read_rows(out / "results.csv")
    assert [r["file"] for r in rows] == ["spk0/utt0.flac", "spk0/utt2.flac", "spk1/utt1.flac"]  # sorted paths
    assert list(rows[0])[:4] == ["file", "snr_db", "noise_type", "duration_s"]
    assert set(M.ALL) <= set(rows[0]) and {"input_" + m for m in M.ALL} <= set(rows[0])
    assert [float(r["snr_db"]) for r in rows] == [-5.0, 5.0, 0.0]
    assert [r["noise_type"] for r in rows] == ["white", "white", "lowpass"]
    assert [float(r["rtf"]) for r in rows] == pytest.approx([0.5, 1.5, 1.0])  # last ok row of the log
    for r in rows:
        assert r["message"] == ""
        for m in M.ALL:
            assert math.isfinite(float(r[m])) and math.isfinite(float(r["input_" + m])), m
        assert float(r["si_sdr"]) > float(r["input_si_sdr"]) + 5
        assert 1.0 <= float(r["dnsmos_ovrl"]) <= 5.0

    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_files"] == 3 and summary["metrics"] == list(M.ALL)
    assert set(summary["pesq_variants"]) == {"pesq_nb_raw", "pesq_nb", "pesq_wb"}
    ov = summary["overall"]
    for m in M.ALL:
        assert set(ov[m]) == {"enhanced", "input", "improvement"}
        assert ov[m]["enhanced"]["n"] == 3 and set(ov[m]["enhanced"]) == {"mean", "ci", "n", "n_nan"}
    assert ov["si_sdr"]["improvement"]["mean"] == pytest.approx(
        np.mean([float(r["si_sdr"]) - float(r["input_si_sdr"]) for r in rows]), rel=1e-5)
    for m in ("si_sdr", "pesq_nb_raw", "estoi", "pesq_wb"):
        assert ov[m]["improvement"]["mean"] > 0, m
    assert ov["rtf"]["total"] == pytest.approx((0.5 + 1.0 + 1.5) * 2.3 / (3 * 2.3))
    assert list(summary["by_snr"]) == ["-5", "0", "5"]
    assert summary["by_snr"]["0"]["n_files"] == 1 and summary["by_snr"]["0"]["si_sdr"]["enhanced"]["ci"] is None
    assert set(summary["by_noise_type"]) == {"lowpass", "white"}
    assert summary["by_noise_type"]["white"]["si_sdr"]["enhanced"]["n"] == 2
    assert all(v == 0 for v in summary["failures"].values())

    md = (out / "summary.md").read_text()
    assert "## By SNR" in md and "## By noise type" in md and "P.862.2" in md and "± " in md
    assert [f["file"] for f in summary["figures"]] == ["spk0/utt0.flac", "spk1/utt1.flac"]  # -5 dB, 0 dB
    for f in summary["figures"]:
        assert (out / f["png"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({f['png']})" in md
    assert not list(out.rglob(".*.part"))  # no temporary left behind


def test_cli_process_pool_and_failing_metric(tmp_path, capsys):
    """Two worker processes; a silent enhanced file gives NaN + message for it, not a crash."""
    root = make_set(tmp_path, log=False, manifest=False)
    sf.write(root / "enh" / "spk1" / "utt1.flac", np.zeros(int(2.3 * FS)), FS)
    out = tmp_path / "rep"
    rc, err = run_cli(capsys, "--enhanced", root / "enh", "--clean", root / "clean", "-o", out,
                      "--metrics", "si_sdr,pesq_wb,si_sir", "--jobs", "2", "--figures", "0")
    assert rc == 1 and "si_sir needs the noisy" in err and not out.exists()
    rc, err = run_cli(capsys, "--enhanced", root / "enh", "--clean", root / "clean", "-o", out,
                      "--metrics", "si_sdr,pesq_wb", "--jobs", "2", "--figures", "0")
    assert rc == 0, err
    rows = read_rows(out / "results.csv")
    assert list(rows[0]) == ["file", "snr_db", "noise_type", "duration_s", "pesq_wb", "si_sdr", "rtf", "message"]
    bad = rows[2]
    assert bad["file"] == "spk1/utt1.flac" and bad["pesq_wb"] == "nan" and "silent" in bad["message"]
    assert all(r["message"] == "" and float(r["pesq_wb"]) > 1 for r in rows[:2])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["failures"]["pesq_wb"] == 1 and summary["overall"]["pesq_wb"]["enhanced"]["n"] == 2
    assert summary["by_snr"] == {} and summary["inputs"]["manifest"] is None and "rtf" not in summary["overall"]
    assert summary["figures"] == []


def test_cli_bad_input_exits_1_without_report(tmp_path, capsys):
    root = make_set(tmp_path, log=False)
    out = tmp_path / "report"
    base = ["--clean", root / "clean", "-o", out, "--figures", "0", "--metrics", "si_sdr"]

    rc, err = run_cli(capsys, "--enhanced", tmp_path / "nope", *base)
    assert rc == 1 and err.startswith("error:") and "does not exist" in err and err.count("\n") == 1

    (root / "enh" / "spk0" / "utt2.flac").unlink()  # one enhanced output missing
    rc, err = run_cli(capsys, "--enhanced", root / "enh", "--noisy", root / "noisy", *base)
    assert rc == 2 and "1 noisy files have no enhanced output" in err and "spk0/utt2" in err
    assert err.count("\n") == 1 and not out.exists()
    # without --noisy, the clean folder says what should have been enhanced (issue 28: no silent partial score)
    rc, err = run_cli(capsys, "--enhanced", root / "enh", *base)
    assert rc == 2 and "1 clean files have no enhanced output" in err and "spk0/utt2" in err and not out.exists()

    (root / "clean" / "spk1" / "utt1.wav").unlink()
    rc, err = run_cli(capsys, "--enhanced", root / "enh", *base)
    assert rc == 2 and "1 enhanced files have no clean file" in err and "spk1/utt1" in err

    (root / "bad.json").write_text("{not json")
    rc, err = run_cli(capsys, "--enhanced", root / "enh", "--manifest", root / "bad.json", "--allow-missing", *base)
    assert rc == 1 and "manifest" in err

    rc, err = run_cli(capsys, "--enhanced", root / "enh", "--clean", root / "clean", "-o", out,
                      "--metrics", "pesq,mosnet")
    assert rc == 1 and "unknown metric 'mosnet'" in err
    assert not out.exists()

    # --allow-missing scores what is complete and says what it left out
    rc, err = run_cli(capsys, "--enhanced", root / "enh", "--noisy", root / "noisy", "--allow-missing", *base)
    assert rc == 0, err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_files"] == 1 and summary["missing"] == {"no clean file": 1, "no enhanced output": 1}
    assert summary["missing_files"] == {"no clean file": ["spk1/utt1"], "no enhanced output": ["spk0/utt2"]}
    assert "note: left out 1 file(s) with no enhanced output: spk0/utt2" in err
    assert "`spk0/utt2`" in (out / "summary.md").read_text()


def test_pairing_rules(tmp_path):
    for name in ("a.wav", "b.flac", ".hidden.wav", "notes.txt"):
        (tmp_path / "x").mkdir(exist_ok=True)
        (tmp_path / "x" / name).write_bytes(b"")
    assert sorted(E.index_dir(tmp_path / "x", "enhanced")) == ["a", "b"]
    (tmp_path / "x" / "a.flac").write_bytes(b"")
    with pytest.raises(E.EvalError, match="same name without extension"):
        E.index_dir(tmp_path / "x", "enhanced")


def test_enhance_log_and_manifest_readers(tmp_path):
    log = tmp_path / "enhance_log.csv"
    log.write_text("file,duration_s,seconds,rtf,status,message\n"
                   "a/b.wav,2.000,4.000,2.0,ok,\n"
                   "a/b.wav,,,,skipped,output exists\n"
                   "a/b.wav,2.000,3.000,1.5,ok,\n"
                   "c.wav,1.000,,,error,boom\n")
    assert E.read_enhance_log(log) == {"a/b": (2.0, 3.0)}
    log.write_text("name,seconds\nx,1\n")
    with pytest.raises(E.EvalError, match="not an enhance log"):
        E.read_enhance_log(log)
    man = tmp_path / "manifest.json"
    man.write_text(json.dumps({"mixtures": [{"noisy": "noisy/s1/u.flac", "snr_db": 5}]}))
    assert E.load_manifest(man) == {"s1/u": {"noisy": "noisy/s1/u.flac", "snr_db": 5}}
    man.write_text(json.dumps({"files": []}))
    with pytest.raises(E.EvalError, match="mixtures"):
        E.load_manifest(man)
