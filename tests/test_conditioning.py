"""The engine's conditioning path: a per-utterance stream cut with the waveform's chunk plan, padded, batched
and compiled in only for a method that declares one (toy backend, no network)."""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
import pytest

from jaxse import parallel
from jaxse.diffusion.backend import DiffusionBackend
from jaxse.enhance import Conditioning, Enhancer
from jaxse.spectral import SpecConfig

SR = 16000
COND = Conditioning("lip features", rate=25.0, dim=3)


class GainBackend(DiffusionBackend):
    """Posterior = the noisy spectrogram times the mean of the row's real conditioning frames (channel 0); the
    diffusion methods' front end (compressed STFT, its inverse, the normalisation), no network.

    The spectrogram is the compressed one (magnitude^0.5), so a gain g on it is a gain g² on the waveform."""

    def __init__(self, conditioning=COND):  # no model: only the front end of DiffusionBackend is used
        self.name = "toy-gain"
        self.spec = SpecConfig()
        self.variables = {"unused": jnp.zeros(())}
        self.conditioning = conditioning
        self.quantum = 64

    def posterior(self, variables, key, x, mask, cond=None):
        if cond is None:
            return x
        frames, count = cond
        real = jnp.arange(frames.shape[0]) < count
        gain = jnp.sum(jnp.where(real, frames[:, 0], 0.0)) / jnp.maximum(count, 1)
        return x * gain.astype(x.real.dtype)

    @property
    def nfe(self):
        return 0

    def cost(self):
        return {"nfe": 0}


def _wave(seconds, seed=0):
    rng = np.random.default_rng(seed)
    return (0.3 * rng.standard_normal(int(seconds * SR))).astype(np.float32)


def test_span_covers_the_samples_of_a_row():
    assert COND.span(0, SR, SR) == (0, 25)
    assert COND.span(8064, 8064, SR) == (12, 26)  # floor(12.6), ceil(25.2)
    assert COND.span(0, 1, SR) == (0, 1)  # never empty
    # the padded size holds the span of a row of that length at any start
    row = parallel.row_length(64, SpecConfig())
    for start in range(0, 5 * SR, 997):
        first, end = COND.span(start, row, SR)
        assert end - first <= COND.max_frames(row, SR)


def test_constant_conditioning_scales_whole_and_chunked_inputs():
    enh = Enhancer(GainBackend(), batch_size=2, chunk_frames=64)
    short, long = _wave(0.4, 1), _wave(1.7, 2)  # one row; 1.7 s > 64 frames: chunked
    res = {r.uid: r for r in enh.stream([("s", short, None, np.full((10, 3), 2.0)),
                                         ("l", long, None, np.full((43, 3), 0.5))])}
    assert res["s"].error is None and res["l"].error is None
    np.testing.assert_allclose(res["s"].wave, 2.0**2 * short, atol=4e-4)
    np.testing.assert_allclose(res["l"].wave, 0.5**2 * long, atol=1e-4)
    assert {f for f, _ in enh.compile_seconds} == {64}  # the short row and the chunks share the 64-frame bucket


def test_each_chunk_gets_the_frames_of_its_span():
    enh = Enhancer(GainBackend(), batch_size=64, chunk_frames=64, max_pending=64)
    wave = _wave(2.3, 3)
    frames = np.arange(58, dtype=np.float32)[:, None] * np.ones((1, 3), np.float32)  # value = frame index
    assert enh.submit("u", wave, None, frames) == []
    rows = [r for q in enh._queues.values() for r in q]
    plan = parallel.plan_chunks(len(wave), enh.chunk_length, enh.overlap)
    assert len(rows) == plan.num_chunks > 1
    for r, start in zip(rows, plan.starts):
        first, end = COND.span(start, enh.chunk_length, SR)
        np.testing.assert_array_equal(r.cond[:, 0], np.arange(first, min(end, 58)))
    out = enh.flush()
    assert len(out) == 1 and out[0].error is None and np.isfinite(out[0].wave).all()


@pytest.mark.parametrize("backend_cond, cond, message", [
    (COND, None, "needs the lip features"),
    (None, np.ones((10, 3)), "takes no conditioning input"),
    (COND, np.ones((10, 4)), "expected an array (frames, 3)"),
    (COND, np.ones((60, 3)), "2.40 s of frames for 0.40 s of audio"),
    (COND, np.full((10, 3), np.nan), "non-finite"),
])
def test_bad_conditioning_is_an_error_of_that_input_only(backend_cond, cond, message):
    enh = Enhancer(GainBackend(backend_cond), batch_size=1, chunk_frames=64)
    [res] = enh.submit("bad", _wave(0.4), None, cond)
    assert res.wave is None and message in res.error
    assert enh.compile_count == 0


def test_without_conditioning_the_program_takes_none():
    enh = Enhancer(GainBackend(None), batch_size=1, chunk_frames=64)
    w = _wave(0.3, 4)
    [y] = enh.enhance([w])
    np.testing.assert_allclose(y, w, atol=1e-4)
    assert math.isclose(float(np.max(np.abs(y))), float(np.max(np.abs(w))), rel_tol=1e-3)


def test_enhance_files_passes_each_file_its_stream(tmp_path):
    import soundfile as sf

    from jaxse.enhance import enhance_files

    (tmp_path / "in" / "spk").mkdir(parents=True)
    waves = {"a.wav": _wave(0.5, 5), "spk/b.wav": _wave(0.6, 6), "c.wav": _wave(0.5, 7)}
    for rel, w in waves.items():
        sf.write(tmp_path / "in" / rel, w, SR, subtype="FLOAT")
    gains = {"a.wav": 2.0, "spk/b.wav": 0.5}

    def features(rel):
        if rel not in gains:
            raise FileNotFoundError(f"no features for {rel}")
        return np.full((int(len(waves[rel]) / SR * 25), 3), gains[rel])

    enh = Enhancer(GainBackend(), batch_size=2, chunk_frames=64)
    summary = enhance_files(tmp_path / "in", tmp_path / "out", enh, progress=False, conditioning=features)
    assert (summary.done, summary.failed) == (2, 1)
    for rel, g in gains.items():
        y, _ = sf.read(tmp_path / "out" / rel, dtype="float32")
        np.testing.assert_allclose(y, g**2 * waves[rel], atol=4e-4)
    assert not (tmp_path / "out" / "c.wav").exists()
    log = (tmp_path / "out" / "enhance_log.csv").read_text()
    assert "no features for c.wav" in log
