"""Training of the RVAE speech model (the ``"rvae"`` model family of ``train.py``), as in the reference recipe.

The reference is the DVAE_SE recipe of Bie et al. (TASLP 2022) that produced the published non-causal RVAE
(``RVAE_final_epoch294.pt``). It trains on the power spectrograms of 50-frame speech sequences:

    waves  : peak-normalised crops of (50 - 1)·256 = 12544 samples of silence-trimmed clean speech, (B, L)
    x      = |STFT(waves)|²     1024-point sine-window STFT, hop 256, centred with reflect padding -> (T=50, B, 513)
    z, μ, log σ² = encoder(x, ε)          one reparameterised sample, ε ~ N(0, I) (autoregressive: z_t fed back)
    v      = exp(decoder(z))
    recon  = Σ IS(x, v + 1e-10) / (T·B),      IS(a, b) = a/b − log(a/b) − 1
    kl     = Σ KL(N(μ, σ²) || N(0, I)) / (T·B) = −½ Σ (1 + log σ² − μ² − σ²) / (T·B)
    loss   = recon + w_kl·β·kl,   β = 0.01,   w_kl = epoch / 50 for epochs < 50, then 1
    Adam(lr 1e-3, b1 .9, b2 .999, eps 1e-8), batch 128, no clipping, no EMA

How this implementation maps the reference's epochs onto the step-based loop of :mod:`jaxse.training`:

* **Batches.** The reference shuffles a list of non-overlapping 50-frame chunks of the trimmed files once per
  epoch. Here every step draws its own batch as a pure function of ``(seed, step)``
  (:meth:`jaxse.data.CleanSpeechDataset.global_batch_plan`, the property that makes resumed runs exact):
  files with probabilities proportional to their number of reference chunks (``sample_by_length``), then a
  uniformly random crop start inside the trimmed file. So every 12544-sample stretch of trimmed speech is
  (nearly) equally likely, as in the reference, but crops are not aligned to the chunk grid and an "epoch"
  is a number of steps, not a pass without repetition.
* **Epochs.** ``steps_per_epoch = ceil(chunks / batch)`` with ``chunks`` the reference's chunk count of the
  trimmed training set (``Σ (1 + L // 256) // 50``; 6,222 for ``../shared/data/train``, i.e. 49 steps). The KL
  warm-up uses the integer epoch ``step // steps_per_epoch`` (as the reference's ``epoch / 50``), and
  ``training.num_epochs × steps_per_epoch`` is the default length of a run.
* **Validation and early stopping.** The validation set is every reference chunk of the trimmed validation
  files (whole batches only). The validation loss is the same loss with the *full* KL weight (β·KL, w_kl = 1),
  so that values from the warm-up and after it compare; the reference evaluates with the current w_kl and
  therefore always takes the warm-up epochs as "best". The checkpoint with the lowest validation loss is kept
  (``training.keep_best``) and is the one ``python -m jaxse.export`` picks; training stops early when the
  validation loss has not improved for ``training.early_stop_patience_epochs`` epochs (30), counted from the
  end of the warm-up at the earliest.
* **KL term.** The reference's ``loss_KLD`` omits the constant ``+1`` of the Gaussian KL (it sums
  ``log σ² − μ² − σ²``), which adds ``½·z_dim`` per frame (× w_kl·β) to its reported losses but changes no
  gradient. Here the KL is the exact divergence (0 for q = N(0, I)).
* **IS divergence.** As in the reference, ``x/y − log(x/y) − 1`` with ``y = v + 1e-10``; the ratio in the
  log is floored at the smallest normal float so that an exactly-zero bin (digital silence) gives a large
  finite loss instead of ``inf`` (``../shared/data`` has no such bins after trimming).

Parameters and checkpoints: the TrainState of :mod:`jaxse.training` with ``ema_params = None`` (the recipe
has no EMA) and ``constants = {}``; the checkpoint metadata's ``model`` is :meth:`RVAEModel.to_dict`.
:func:`export_rvae` writes a trained model in the ``rvae.json`` + ``rvae_params.npz`` format of
:func:`jaxse.rvae.convert.load_rvae`, with a MODEL_CARD.md.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import optax

from jaxse.rvae.net import RVAEConfig, config_from_params, decode, encode, init_params
from jaxse.rvae.spectral import RVAESpecConfig, stft

FAMILY = "rvae"


# ------------------------------------------------------------------------------------------ model and settings


@dataclasses.dataclass(frozen=True)
class RVAEModel:
    """The RVAE as a model of :mod:`jaxse.training`: its sizes plus the interface the training loop needs."""

    cfg: RVAEConfig = RVAEConfig()

    family: ClassVar[str] = FAMILY
    uses_ema: ClassVar[bool] = False  # the reference recipe has no EMA: validation and export use the params
    frame_multiple: ClassVar[int] = 1  # any number of frames

    def init(self, key, num_bins: int | None = None, *_, **__) -> dict:
        """Fresh variables ``{"params": ..., "constants": {}}`` (PyTorch initialisation)."""
        if num_bins is not None and int(num_bins) != self.cfg.x_dim:
            raise ValueError(f"the RVAE has x_dim={self.cfg.x_dim} but the spectrogram has {num_bins} bins")
        return {"params": init_params(key, self.cfg), "constants": {}}

    def abstract_variables(self, num_bins: int | None = None) -> dict:
        return jax.eval_shape(lambda k: self.init(k, num_bins), jax.random.PRNGKey(0))

    def decode(self, variables, z):
        """The decoder alone: log speech variances ``(T, *batch, x_dim)`` of latents ``z`` ``(T, *batch, z_dim)``
        (``variables``: ``{"params": ...}`` or the parameter dict itself)."""
        return decode(variables, z)

    @classmethod
    def from_variables(cls, variables) -> "RVAEModel":
        """The model a parameter dict was made for (from its shapes)."""
        return cls(config_from_params(variables))

    def to_dict(self) -> dict:
        return {"family": FAMILY, **self.cfg.to_dict()}

    @classmethod
    def from_dict(cls, d: dict) -> "RVAEModel":
        d = dict(d)
        family = d.pop("family", FAMILY)
        if family != FAMILY:
            raise ValueError(f"not an RVAE model description (family {family!r})")
        return cls(RVAEConfig(**d))

    @classmethod
    def from_config(cls, config) -> "RVAEModel":
        """From ``config.model``: ``family = "rvae"`` plus :class:`~jaxse.rvae.net.RVAEConfig` fields."""
        m = config.model
        fields = {f.name for f in dataclasses.fields(RVAEConfig)}
        unknown = set(m.keys()) - fields - {"family"}
        if unknown:
            raise ValueError(f"unknown config.model fields for the RVAE: {sorted(unknown)}")
        return cls(RVAEConfig(**{k: m[k] for k in m.keys() if k in fields}))


@dataclasses.dataclass(frozen=True)
class RVAEObjective:
    """The loss settings: ``beta`` (KL weight), KL warm-up length in epochs, steps per epoch, variance floor."""

    beta: float = 0.01
    kl_warm_epochs: int = 50
    steps_per_epoch: int = 1
    var_eps: float = 1e-10

    def __post_init__(self):
        if int(self.steps_per_epoch) < 1:
            raise ValueError(f"steps_per_epoch must be >= 1, got {self.steps_per_epoch}")
        if int(self.kl_warm_epochs) < 0:
            raise ValueError(f"kl_warm_epochs must be >= 0, got {self.kl_warm_epochs}")

    @property
    def warmup_steps(self) -> int:
        return int(self.kl_warm_epochs) * int(self.steps_per_epoch)

    @classmethod
    def from_config(cls, config, steps_per_epoch: int) -> "RVAEObjective":
        r = config.rvae
        return cls(beta=float(r.beta), kl_warm_epochs=int(r.kl_warm_epochs), steps_per_epoch=int(steps_per_epoch),
                   var_eps=float(r.var_eps))


def spec_from_config(config) -> RVAESpecConfig:
    """:class:`RVAESpecConfig` of ``config.spec`` (n_fft, hop_length, pad_mode) at ``config.data.sample_rate``."""
    return RVAESpecConfig(sample_rate=int(config.data.sample_rate), **dict(config.spec))


def steps_per_epoch(num_chunks: int, batch_size: int) -> int:
    """Optimizer steps of one reference epoch: ``ceil(chunks / batch)`` (its DataLoader keeps the last batch)."""
    return max(1, math.ceil(int(num_chunks) / int(batch_size)))


# ------------------------------------------------------------------------------------------------------ loss


def kl_warmup_weight(step, steps_per_epoch: int, warm_epochs: int):
    """``w_kl`` of the step after ``step`` optimizer steps: ``min(epoch, W) / W``, ``epoch = step // steps_per_epoch``.

    The reference's ``epoch / kl_warm_step`` for ``epoch < kl_warm_step``, then 1 (so 0 for the whole first
    epoch). ``warm_epochs = 0`` means no warm-up (always 1).
    """
    if int(warm_epochs) <= 0:
        return jnp.ones((), jnp.float32)
    epoch = jnp.asarray(step, jnp.int32) // int(steps_per_epoch)
    return jnp.minimum(epoch, int(warm_epochs)).astype(jnp.float32) / float(warm_epochs)


def itakura_saito(x, y):
    """Elementwise IS divergence ``x/y − log(x/y) − 1`` (the ratio in the log floored at the smallest normal)."""
    r = x / y
    return r - jnp.log(jnp.maximum(r, jnp.finfo(r.dtype).tiny)) - 1.0


def gaussian_kl(mu, logvar):
    """Elementwise ``KL(N(mu, e^logvar) || N(0, 1)) = −½ (1 + logvar − mu² − e^logvar)``."""
    return -0.5 * (1.0 + logvar - mu * mu - jnp.exp(logvar))


def power_spectrogram(waves, spec: RVAESpecConfig = RVAESpecConfig()):
    """``|STFT|²`` of ``(B, L)`` waveforms, time-major ``(T, B, F)`` as the RVAE takes it."""
    s = stft(waves, spec)  # (B, F, T)
    return jnp.transpose(jnp.real(s) ** 2 + jnp.imag(s) ** 2, (2, 0, 1))


def rvae_loss(params, x_power, key, kl_weight, beta: float = 0.01, var_eps: float = 1e-10):
    """``(loss, {"recon", "kl"})`` of a batch of power spectrograms ``(T, B, F)``, both terms per frame.

    ``recon = Σ IS(x, exp(log v) + var_eps) / (T·B)``, ``kl = Σ KL / (T·B)``, ``loss = recon + kl_weight·beta·kl``.
    ``key`` draws the encoder's reparameterisation noise.
    """
    z, mu, logvar = encode(params, x_power, key)
    log_v = decode(params, z)
    frames = x_power.shape[0] * math.prod(x_power.shape[1:-1])
    recon = jnp.sum(itakura_saito(x_power, jnp.exp(log_v) + var_eps)) / frames
    kl = jnp.sum(gaussian_kl(mu, logvar)) / frames
    return recon + kl_weight * beta * kl, {"recon": recon, "kl": kl}


def train_step(state, batch, *, spec: RVAESpecConfig, tx: optax.GradientTransformation, objective: RVAEObjective):
    """One Adam step on ``batch["waves"]`` (peak-normalised crops ``(B, L)``): ``(new_state, metrics)``.

    The encoder noise of step ``s`` comes from ``fold_in(state.key, s)``; ``state.ema_params`` stays ``None``.
    """
    key = jax.random.fold_in(state.key, state.step)
    x = power_spectrogram(batch["waves"], spec)
    kl_weight = kl_warmup_weight(state.step, objective.steps_per_epoch, objective.kl_warm_epochs)

    def loss_fn(params):
        return rvae_loss(params, x, key, kl_weight, objective.beta, objective.var_eps)

    (loss, parts), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
    metrics = {"loss": loss, "recon": parts["recon"], "kl": parts["kl"], "kl_weight": kl_weight,
               "grad_norm": optax.tree.norm(grads)}
    return new_state, metrics


def eval_step(variables, batch, key, *, spec: RVAESpecConfig, objective: RVAEObjective) -> dict:
    """Validation terms of ``batch["waves"]`` with the full KL weight: ``{"loss", "recon", "kl"}`` (no update)."""
    loss, parts = rvae_loss(variables["params"], power_spectrogram(batch["waves"], spec), key, 1.0, objective.beta,
                            objective.var_eps)
    return {"loss": loss, **parts}


# ---------------------------------------------------------------------------------------------------- export


def _fmt(x, spec: str = ".4f") -> str:
    return "n/a" if x is None else format(x, spec)


def _reproduce(info: dict) -> list[str]:
    """The commands that make this export: from scratch, or continuing the RVAE it was warm-started from."""
    warm = info.get("init_from") or {}
    if not warm.get("source"):
        return [f"python train.py --config configs/rvae.py --workdir runs/rvae --config.training.num_steps={info.get('step')}",
                "python -m jaxse.export runs/rvae -o OUTDIR"]
    return [f"# warm start from {warm['source']} (its step {warm.get('step')}), e.g. configs/rvae_long.py:",
            f"python train.py --config CONFIG --workdir runs/rvae_long --config.training.init_from={warm['source']} "
            f"--config.training.num_steps={info.get('step')}",
            "python -m jaxse.export runs/rvae_long -o OUTDIR"]


def model_card(info: dict) -> str:
    """MODEL_CARD.md text for an exported RVAE; ``info`` is what :func:`export_rvae` puts in ``rvae.json``."""
    cfg = info["config"]
    train = info.get("training", {})
    tc, rc, dc = train.get("training", {}), train.get("rvae", {}), train.get("data", {})
    data = info.get("data", {})
    kind = "non-causal (bidirectional g_x and h)" if cfg.get("bidir_h") else "causal"
    size_mb = info.get("params_bytes", 0) / 1e6
    spec = info.get("spec") or {}
    frames = int(dc.get("crop_frames", 50))
    lines = [
        "# jaxse RVAE speech model",
        "",
        "A recurrent variational autoencoder of clean-speech power spectrograms (the \"RVAE-NonCausal\" of Bie et al.,",
        "TASLP 2022), trained from scratch with `train.py` for the RVAE-based unsupervised enhancement methods",
        "(VEM, LDEM, MHEM, MALAEM). No published weights were used.",
        "",
        "| | |",
        "|---|---|",
        f"| network | {kind} RVAE: x_dim {cfg['x_dim']}, z_dim {cfg['z_dim']}, LSTM sizes g_x {cfg['dim_rnn_g_x']}, "
        f"g_z {cfg['dim_rnn_g_z']}, h {cfg['dim_rnn_h']} |",
        f"| parameters | {info['num_params']:,} ({size_mb:.1f} MB as float32 .npz) |",
        f"| input | {spec.get('sample_rate', 16000) // 1000} kHz; power spectrogram \\|STFT\\|², n_fft "
        f"{spec.get('n_fft', 1024)}, hop {spec.get('hop_length', 256)}, sine window, centred "
        f"({spec.get('pad_mode', 'reflect')} padding) |",
        f"| recipe | IS reconstruction + w_kl·β·KL, β = {rc.get('beta')}, KL warm-up over {rc.get('kl_warm_epochs')} "
        f"epochs; sequences of {frames} frames ({(frames - 1) * int(spec.get('hop_length', 256))} samples), "
        f"each peak-normalised, silence trimmed at {dc.get('trim_top_db')} dB; Adam lr {tc.get('lr')}, batch "
        f"{tc.get('batch_size')} |",
        f"| training | {info.get('step')} steps = {_fmt(info.get('epoch'), '.1f')} epochs of "
        f"{data.get('steps_per_epoch', 'n/a')} steps ({data.get('train_chunks', 'n/a')} training chunks) |",
        f"| selection | lowest validation loss among the kept checkpoints: step {info.get('step')}, loss "
        f"{_fmt(info.get('valid_loss'))} (IS {_fmt(info.get('valid_recon'))} + β·KL, KL {_fmt(info.get('valid_kl'))}"
        " per frame) |",
        "",
        "The validation loss is the per-frame negative β-ELBO (IS divergence + β·KL with the full KL weight, up to",
        f"constants) on every non-overlapping {frames}-frame chunk of the trimmed validation files; lower is better.",
        "",
    ]
    history = info.get("valid_history") or []
    if history:
        points = ", ".join(f"{loss:.1f} ({step})" for step, loss in history)
        lines += [f"Validation loss (step) during training: {points}.", ""]
    lines += [
        "Reproduce:",
        "",
        "```bash",
        *_reproduce(info),
        "```",
        "",
        "Load it with `jaxse.rvae.convert.load_rvae(OUTDIR)`.",
        "",
        "## Training data and license",
        "",
        f"Clean speech from `{dc.get('train_dir')}` ({data.get('train_files', 'n/a')} files, "
        f"{_fmt(data.get('train_hours'), '.2f')} h after trimming silence); validation on `{dc.get('valid_dir')}`.",
    ]
    if data.get("corpus") == "speechocean762":
        lines += [
            "This is the `train/` part of the project's data pack: **speechocean762** (J. Zhang et al.,",
            "\"speechocean762: An Open-Source Non-native English Speech Corpus For Pronunciation Assessment\",",
            "Interspeech 2021, arXiv:2104.01378), English read by Mandarin-speaking adults, 16 kHz. The corpus",
            "authors release it for commercial and non-commercial use (Apache-2.0 on their dataset card). No noisy",
            "speech and no noise recordings were used for training.",
        ]
    lines += [
        "",
        "## Limits",
        "",
        f"- Trained on {_fmt(data.get('train_hours'), '.2f')} h of speech (after trimming), not on WSJ0 si_tr_s (the "
        "published model's data): expect a weaker speech model than the published checkpoint.",
        f"- Trained for {_fmt(info.get('epoch'), '.1f')} epochs; the recipe allows {tc.get('num_epochs', 300)}, with "
        f"early stopping after {tc.get('early_stop_patience_epochs', 30)} epochs without improvement.",
        "",
    ]
    return "\n".join(lines)


def export_rvae(directory, params, info: dict) -> Path:
    """Write ``params`` as ``DIR/rvae.json`` + ``DIR/rvae_params.npz`` (:func:`jaxse.rvae.convert.save_rvae`)
    plus ``DIR/MODEL_CARD.md``; ``info`` (JSON-serialisable) goes into ``rvae.json`` next to the config."""
    from jaxse.rvae.convert import PARAMS_FILE, save_rvae

    directory = Path(directory)
    out = save_rvae(directory, params, extra=info)
    full = {**info, **_read_json(out / "rvae.json"), "params_bytes": (out / PARAMS_FILE).stat().st_size}
    (out / "MODEL_CARD.md").write_text(model_card(full))
    return out


def _read_json(path: Path) -> dict[str, Any]:
    import json

    return json.loads(Path(path).read_text())
