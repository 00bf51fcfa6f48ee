"""`python -m jaxse.convert`: reference weights -> an inference-only jaxse prior that loads like a training checkpoint."""

import subprocess
import sys

import jax
import numpy as np

from jaxse.diffusion import convert
from jaxse.training import load_checkpoint
from tests.conftest import GOLDEN, REPO, cplx, load_golden, rel_err


def test_convert_cli_round_trip(tmp_path):
    src = GOLDEN / "ncsnppm_small.npz"
    d = load_golden("ncsnppm_small.npz")
    out = tmp_path / "prior"
    r = subprocess.run([sys.executable, "-m", "jaxse.convert", str(src), "-o", str(out)], cwd=REPO,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "440,382 parameters" in r.stdout
    model, variables, meta = load_checkpoint(out)
    assert meta["kind"] == "inference-prior" and meta["sample_rate"] == 16000
    _, ref = convert.import_reference(src)
    jax.tree.map(np.testing.assert_array_equal, variables, ref)
    score = jax.jit(model.score)(variables, cplx(d, "x", True).astype(np.complex64), d["t"])
    assert rel_err(score, cplx(d, "score", True)) < 1e-4


def test_convert_cli_bad_input_is_one_line(tmp_path):
    (tmp_path / "weights.txt").write_text("hello")
    paths = [tmp_path / "missing.ckpt", tmp_path / "weights.txt"]
    try:
        import torch  # noqa: F401  (a damaged .ckpt is only read when torch is installed)

        (tmp_path / "model.ckpt").write_text("not a checkpoint")
        paths.append(tmp_path / "model.ckpt")
    except ImportError:
        pass
    for path in paths:
        r = subprocess.run([sys.executable, "-m", "jaxse.convert", str(path), "-o", str(tmp_path / "o")], cwd=REPO,
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 2
        lines = [ln for ln in r.stderr.strip().splitlines() if not ln.startswith("WARNING")]
        assert len(lines) == 1 and lines[0].startswith("error:"), r.stderr
    assert not (tmp_path / "o").exists()
