"""The RVAE methods' backend for the enhancement engine (VEM / MHEM / MALAEM / LDEM with an NMF noise model),
and the loader of RVAE weights (``rvae.json`` directories, reference ``.pt`` / ``.npz``)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Callable

import numpy as np

from jaxse import parallel, registry
from jaxse.core.backend import CheckpointError, MethodBackend
from jaxse.core.loading import checkpoint_path
from jaxse.rvae.posterior import RVAEPosteriorConfig, rvae_posterior
from jaxse.rvae.spectral import RVAESpecConfig
from jaxse.rvae.training import RVAEModel
from jaxse.errors import one_line


class RVAEBackend(MethodBackend):
    """The RVAE EM algorithms: sine-window STFT without compression (:mod:`jaxse.rvae.spectral`, computed on
    the padded rows by :func:`jaxse.parallel.batched_stft`), ``NF = max |x|`` (the reference's peak
    normalisation), per-row :func:`jaxse.rvae.posterior.rvae_posterior` (or ``posterior`` with its signature) with the
    frame mask. Any frame count works; rows use buckets of ``frame_quantum`` (64) frames all the same.

    ``nfe`` counts decoder forward passes per row; :meth:`cost` has the EM iterations and every pass count
    (:meth:`jaxse.rvae.posterior.RVAEPosteriorConfig.cost`). ``model``: the :class:`jaxse.rvae.training.RVAEModel`
    of the parameters (default: read from their shapes).
    """

    def __init__(self, params, cfg: RVAEPosteriorConfig = RVAEPosteriorConfig(),
                 spec: RVAESpecConfig = RVAESpecConfig(), *, posterior: Callable = rvae_posterior,
                 frame_quantum: int = 64, eps: float = 1e-12, model: RVAEModel | None = None):
        self._model = model
        self.variables = params
        self.cfg = cfg
        self.spec = spec
        self.posterior_fn = posterior
        self.name = registry.method_named_by("rvae", cfg.method)
        self.quantum = int(frame_quantum)
        self.quantum_note = "the RVAE's bucket quantum"
        self.eps = float(eps)

    @property
    def model(self) -> RVAEModel:
        """The RVAE these parameters are for (given, or read from their shapes on first use)."""
        if self._model is None:
            self._model = RVAEModel.from_variables(self.variables)
        return self._model

    def norm_factor(self, wave):
        return max(float(np.max(np.abs(np.asarray(wave, np.float64)))), self.eps)

    def analysis(self, waves, lengths, num_frames):
        return parallel.batched_stft(waves, lengths, num_frames, self.spec)

    def synthesis(self, spec, lengths, row_length):
        return parallel.batched_istft(spec, lengths, row_length, self.spec)

    def posterior(self, variables, key, x, mask):
        return self.posterior_fn(key, variables, self.cfg, x, mask)[0]

    @property
    def nfe(self) -> int:
        return self.cfg.nfe

    def cost(self) -> dict:
        return self.cfg.cost()

    def describe(self) -> str:
        c = self.cost()
        enc = f"{c['encoder_forward']} encoder forward" + (
            f" and {c['encoder_backward']} backward" if c["encoder_backward"] else "")
        return (f"{self.name}, {c['em_iterations']} EM iterations: {c['decoder_forward']} decoder forward and "
                f"{c['decoder_backward']} backward passes per segment (on {c['chains']} chain(s)), {enc}, "
                f"{c['samples_per_m_step']} sample(s) per M-step")


def default_rvae_checkpoint_path() -> Path:
    """Where an RVAE shipped with the package lives: ``jaxse/assets/rvae`` (``rvae.json`` + ``rvae_params.npz``)."""
    return registry.method("rvae-ldem").default_checkpoint_path()


def load_rvae_prior(checkpoint=None):
    """``(params, spec)`` of an RVAE from a directory with ``rvae.json`` (``python -m jaxse.rvae_convert`` or the
    training export), a reference ``.pt`` state_dict or a ``.npz`` (:func:`jaxse.rvae.convert.load_rvae`), or
    the default (:func:`default_rvae_checkpoint_path`). The STFT settings come from the ``"spec"`` entry of
    ``rvae.json`` when there is one (else :class:`jaxse.rvae.spectral.RVAESpecConfig`). Raises
    :class:`CheckpointError` with one clear line."""
    path = checkpoint_path(checkpoint, default_rvae_checkpoint_path(), "rvae",
                           "no RVAE is shipped with this installation yet (jaxse/assets/rvae is missing); "
                           "pass --checkpoint PATH (a directory with rvae.json, as python -m "
                           "jaxse.rvae_convert writes it, or a reference .pt state_dict)")
    try:
        from jaxse.rvae.convert import CONFIG_FILE, load_rvae

        cfg, params = load_rvae(path)
        spec = RVAESpecConfig()
        meta_path = path / CONFIG_FILE
        if path.is_dir() and meta_path.is_file():
            meta_spec = json.loads(meta_path.read_text()).get("spec") or {}
            known = {f.name for f in dataclasses.fields(RVAESpecConfig)}
            spec = RVAESpecConfig(**{k: v for k, v in meta_spec.items() if k in known})
    except Exception as exc:
        raise CheckpointError(f"{path}: could not load the RVAE ({one_line(exc)})") from exc
    if cfg.x_dim != spec.num_bins:
        raise CheckpointError(f"{path}: the RVAE models {cfg.x_dim} frequency bins, its STFT (n_fft={spec.n_fft}) "
                              f"has {spec.num_bins}")
    return params, spec


def make_backend(model: RVAEModel, variables, cfg: RVAEPosteriorConfig, spec: RVAESpecConfig) -> RVAEBackend:
    """The backend of an RVAE method for ``model`` with ``variables`` (its parameters, e.g. random ones:
    :meth:`jaxse.registry.Method.make_backend`)."""
    return RVAEBackend(variables, cfg, spec, model=model)


def load_backend(checkpoint, cfg: RVAEPosteriorConfig) -> RVAEBackend:
    """The backend of an RVAE method (:data:`jaxse.registry.METHODS`) with ``cfg`` and RVAE weights."""
    params, spec = load_rvae_prior(checkpoint)
    return RVAEBackend(params, cfg, spec)
