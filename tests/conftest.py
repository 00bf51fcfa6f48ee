"""Shared test fixtures: locations of ../shared/golden and ../shared/data (skip clearly when absent)."""

from __future__ import annotations

import os
from pathlib import Path

import jax
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("JAXSE_SHARED", REPO.parent / "shared"))
GOLDEN = SHARED / "golden"
DATA = SHARED / "data"


def _need(path: Path, what: str) -> Path:
    if not path.exists():
        pytest.skip(f"{what} not found at {path} (set JAXSE_SHARED to the folder holding golden/ and data/)")
    return path


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    return _need(GOLDEN, "golden test vectors")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return _need(DATA, "the shared audio data pack")


def load_golden(name: str) -> dict:
    path = _need(GOLDEN / name, f"golden file {name}")
    with np.load(path) as d:
        return {k: d[k] for k in d.files}


def cplx(d: dict, key: str, squeeze_channel: bool = False) -> np.ndarray:
    """Rebuild a complex array stored as ``key_re``/``key_im``; optionally drop the (B,1,F,T) channel axis."""
    z = d[key + "_re"] + 1j * d[key + "_im"]
    if squeeze_channel:
        z = z[:, 0]
    return z


def rel_err(a, b) -> float:
    a, b = np.asarray(a), np.asarray(b)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


@pytest.fixture
def fast_compile():
    """XLA optimisations off for the duration of a test (restored afterwards: other tests want them)."""
    old = jax.config.values["jax_disable_most_optimizations"]
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", old)


def save_random_checkpoint(model, workdir: Path) -> Path:
    """``model`` randomly initialised and saved as a train.py checkpoint (step 0) in ``workdir``."""
    import optax

    from jaxse import training
    from jaxse.spectral import SpecConfig

    old = jax.config.values["jax_disable_most_optimizations"]
    jax.config.update("jax_disable_most_optimizations", True)  # the init compiles ~5x faster
    try:
        state = training.init_train_state(model, optax.adam(1e-3), 0)
    finally:
        jax.config.update("jax_disable_most_optimizations", old)
    with training.checkpoint_manager(workdir) as mngr:
        training.save_checkpoint(mngr, state, training.checkpoint_metadata({}, model, SpecConfig(), 0), step=0)
        mngr.wait_until_finished()
    return workdir
