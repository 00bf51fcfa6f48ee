"""The model families and the enhancement methods, by name: what ``train.py``, export, ``enhance.py`` and the
benchmark dispatch on.

A **family** is a kind of trained model (``config.model.family``; recorded as ``model.family`` in every
checkpoint and export). Its object (a :class:`Family`) builds the model and spectral settings from a config,
supplies the loss (train and eval steps), optional prior samples, warm start, checkpoint loading and export;
the training loop in :mod:`jaxse.training` owns everything else (data, mesh, optimizer, checkpoints, logs).

A **method** is what ``enhance.py --method`` names: the family whose checkpoints it runs on, its settings
class, the shipped default checkpoint, and a loader of its backend (a :class:`jaxse.core.backend.MethodBackend`).
A method may declare a ``conditioning`` input (an extra per-utterance array that the enhancement engine cuts,
pads and batches with the same plan as the waveform).

Both tables hold import paths, not objects: nothing of a family is imported until it is asked for. A new
family is one subpackage plus one entry here (and its configs).
"""

from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path
from typing import Any

from jaxse.errors import JaxseError

# family name -> "module:attribute" of its Family object.
_FAMILIES = {
    "ncsnpp": "jaxse.prior.family:FAMILY",  # the diffusion prior of UDiffSE/UDiffSE+ (NCSN++/NCSN++M)
    "rvae": "jaxse.rvae.family:FAMILY",  # the RVAE speech model of the RVAE-EM baselines
    "sgmse": "jaxse.sgmse.family:SGMSE_FAMILY",  # SGMSE+: score model conditioned on the noisy speech
    "supervised": "jaxse.sgmse.family:SUPERVISED_FAMILY",  # the supervised (predictive) baseline
    "av": "jaxse.av.family:FAMILY",  # the audio-visual prior of AV-UDiffSE (NCSN++ with cross-attention)
}
DEFAULT_FAMILY = "ncsnpp"  # what a config or checkpoint without ``model.family`` is (the original format)
ASSETS = Path(__file__).resolve().parent / "assets"


class RegistryError(JaxseError, ValueError):
    """An unknown family or method, or a checkpoint of another family than the one asked for (one line)."""


def _resolve(target: str) -> Any:
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


# ------------------------------------------------------------------------------------------- families


class Family:
    """The interface of a model family (one instance per family, stateless; see :mod:`jaxse.diffusion.family`
    and :mod:`jaxse.rvae.family`). Defaults are those of a family without EMA, sampler or extra data."""

    name: str = ""
    uses_ema: bool = True  # validation, samples and export use an EMA of the parameters
    has_sampler: bool = False  # can write prior samples during training (``training.sample_every``)
    counts_epochs: bool = False  # its runs are measured in epochs (logged ``train/epoch``)
    batch_fields: tuple[str, ...] = ("waves",)  # the waveform arrays (B, L) of its training batches
    # Train metrics of its steps logged as their latest value rather than averaged over the logging interval.
    last_value_metrics: tuple[str, ...] = ("ema_decay",)

    def model_from_config(self, config):
        """The model object (hashable, ``to_dict``/``init_variables``/``abstract_variables``)."""
        raise NotImplementedError

    def model_from_dict(self, d: dict):
        """Inverse of ``model.to_dict()`` (the ``model`` entry of a checkpoint's metadata)."""
        raise NotImplementedError

    def spec_from_config(self, config):
        """The spectral settings (``num_bins``, ``sample_rate``, ``crop_length(frames)``, ``to_dict``)."""
        raise NotImplementedError

    def validate_config(self, config, model) -> None:
        """Family-specific checks of a training config (``ValueError`` with one line)."""

    def make_dataset(self, config, spec, split: str, crop_frames: int):
        """The training (``split="train"``) or validation (``"valid"``) data set of ``config.data``.

        Default: clean speech, :class:`jaxse.data.CleanSpeechDataset` of ``data.train_dir`` / ``data.valid_dir``
        with ``data.trim_top_db`` and ``data.sample_by_length``; its batches are ``{"waves": (B, L)}``. A family
        trained on other data returns an object with the same methods (``train_batch``, ``valid_batches``, ...)
        whose batches are dicts of its own arrays (e.g. ``{"clean", "noisy"}``). Bad data: ``ValueError``.
        """
        from jaxse.data import CleanSpeechDataset

        d = config.data
        root = d.train_dir if split == "train" else d.valid_dir
        return CleanSpeechDataset(root, sample_rate=int(d.sample_rate), crop_frames=int(crop_frames), spec=spec,
                                  trim_top_db=d.get("trim_top_db", None),
                                  sample_by_length=bool(d.get("sample_by_length", False)))

    def objective(self, config, steps_per_epoch: int):
        """Loss settings that depend on the data set (``None`` when the loss has none)."""
        return None

    def train_step(self, model, spec, tx, ema_decay: float, objective):
        """Pure ``(state, batch) -> (state, metrics)`` (``batch["waves"]``: clean crops; jitted by the loop)."""
        raise NotImplementedError

    def eval_step(self, model, spec, objective):
        """Pure ``(variables, batch, key) -> {"loss": scalar, ...}``."""
        raise NotImplementedError

    def sample_fn(self, model, spec, config):
        """Pure ``(variables, key) -> waves (n, length)`` of prior samples; only when :attr:`has_sampler`."""
        raise NotImplementedError(f"the {self.name} family has no prior sampler")

    def data_info(self, train_ds, steps_per_epoch: int) -> dict:
        """Facts about the training data stored in each checkpoint's metadata (``"data"``), or ``{}``."""
        return {}

    def warm_start(self, model, source, steps_per_epoch: int | None):
        """``(variables, step)`` of a trained model at ``source`` for ``training.init_from``."""
        raise NotImplementedError

    def restore_target(self, model, meta: dict) -> dict:
        """The subtree of the checkpointed train state that inference needs (abstract arrays)."""
        raise NotImplementedError

    def inference_variables(self, restored: dict) -> dict:
        """``{"params", "constants"}`` from the restored :meth:`restore_target` subtree."""
        raise NotImplementedError

    def export(self, directory, model, variables, spec, step: int, valid_loss, config, info: dict) -> Path:
        """Write an inference export of ``variables`` at ``directory`` (which does not exist yet)."""
        raise NotImplementedError

    def export_checkpoint(self, workdir: Path, step: int, output, records: dict) -> tuple[Path, str]:
        """Export checkpoint ``step`` of the training run in ``workdir`` at ``output`` (``python -m jaxse.export``):
        ``(path written, the line the command prints)``. ``records``: the validation records of the run's
        ``metrics.jsonl`` by step (``{"valid/loss": ..., ...}``)."""
        raise NotImplementedError(f"the {self.name} family has no export of training checkpoints")

    def patience_start(self, objective) -> int:
        """The step before which a run does not count towards early stopping (e.g. the end of a KL warm-up):
        patience runs from the best step or from this one, whichever is later. ``objective``: the family's
        :meth:`objective` of the run."""
        return 0

    def prior_sampler(self, num_steps: int | None = None):
        """The sampler of this family's prior (its recipe's settings; ``num_steps`` reverse steps when given): an
        object with ``num_steps``, ``nfe``, ``nfe_per_step``, ``to_dict()``, ``replace(num_steps=...)``, and,
        for a model of the family, ``sample(model, variables, key, shape, debug_loop=False)``, one step
        ``step(model, variables, state, key, t, dt, last)`` and the inputs of its steps
        ``loop_inputs(model, key, shape)`` (what the benchmark times). Only a family with a prior sampler."""
        raise NotImplementedError(f"the {self.name} family has no prior sampler")

    def detect_directory(self, path: Path) -> str | None:
        """The family name when ``path`` (a directory) is in a format of this family's own (e.g. the RVAE's
        ``rvae.json``), else ``None``. Directories in the common checkpoint layout are recognised by
        :func:`detect_family` from their metadata; a family only claims formats of its own here."""
        return None

    def reference_model(self, layout):
        """The model of this family that a reference NCSN++ state_dict of this
        :class:`jaxse.diffusion.convert.ReferenceLayout` belongs to, or ``None`` when it is not one of this
        family's layouts (reference checkpoint import asks every family in turn)."""
        return None

    def reference_state(self, state: dict) -> dict:
        """A reference state_dict without the entries this family does not import (default: all kept)."""
        return state

    def describe_model(self, model) -> str:
        """A few words naming the kind of model (``python -m jaxse.convert`` prints them)."""
        return f"{self.name} model"


def family_names() -> tuple[str, ...]:
    return tuple(_FAMILIES)


def family(name: str | None) -> Family:
    """The family object called ``name`` (``None``: the default family)."""
    name = DEFAULT_FAMILY if name is None else str(name)
    if name not in _FAMILIES:
        raise RegistryError(f"unknown model family {name!r} (one of {', '.join(_FAMILIES)})")
    return _resolve(_FAMILIES[name])


def family_of_config(config) -> Family:
    """The family of a training config: ``config.model.family`` (default :data:`DEFAULT_FAMILY`)."""
    return family(config.model.get("family", DEFAULT_FAMILY))


def family_of_model(model) -> Family:
    return family(getattr(model, "family", DEFAULT_FAMILY))


def family_name_of_metadata(meta: dict) -> str:
    """The family a checkpoint's metadata records (checkpoints from before the record are the default's)."""
    return str((meta.get("model") or {}).get("family", DEFAULT_FAMILY))


def check_family(meta_or_name, expected: str, where) -> None:
    """:class:`RegistryError` (one line) when a checkpoint is not of the ``expected`` family."""
    found = meta_or_name if isinstance(meta_or_name, str) else family_name_of_metadata(meta_or_name)
    if found != expected:
        raise RegistryError(f"{where}: a checkpoint of the {found!r} model family, not {expected!r} as needed here")


def detect_family(path) -> str | None:
    """The family of the checkpoint at ``path`` when its files say so, else ``None``: a directory in a format
    a family claims (:meth:`Family.detect_directory`, e.g. the RVAE's ``rvae.json``), or a train.py workdir /
    checkpoint / export (its metadata's ``model.family``). Reference files (``.ckpt``, ``.npz``, ``.pt``)
    record none."""
    from jaxse.core.checkpoint import looks_like_checkpoint, read_checkpoint_metadata

    path = Path(path)
    if not path.is_dir():
        return None
    for name in _FAMILIES:
        found = family(name).detect_directory(path)
        if found is not None:
            return found
    if looks_like_checkpoint(path):
        try:
            return family_name_of_metadata(read_checkpoint_metadata(path))
        except Exception:  # not readable as a checkpoint: the loader will say why
            return None
    return None


# -------------------------------------------------------------------------------------------- methods


@dataclasses.dataclass(frozen=True)
class Method:
    """An enhancement method of ``enhance.py --method``.

    Attributes:
      name: the method's name on the command line.
      family: the model family of its checkpoints.
      settings: ``"module:Class"`` of its settings (a frozen dataclass with a ``method`` field).
      settings_method: the value of the settings' ``method`` field for this method.
      loader: ``"module:function"``, ``function(checkpoint, cfg) -> MethodBackend`` (checkpoint ``None``: the
        default one).
      default_checkpoint: the folder under ``jaxse/assets`` of the shipped checkpoint.
      conditioning: name of an extra per-utterance input the posterior takes (``None``: none).
      backend: ``"module:function"``, ``function(model, variables, cfg, spec) -> MethodBackend``: the method's
        backend for a model of its family and variables of any origin (e.g. random weights in the benchmark;
        ``None``: the method has none).
    """

    name: str
    family: str
    settings: str
    settings_method: str
    loader: str
    default_checkpoint: str
    conditioning: str | None = None
    backend: str | None = None

    @property
    def settings_class(self):
        return _resolve(self.settings)

    def make_settings(self, **fields):
        """The settings with ``fields`` overridden (the ``method`` field is always this method's)."""
        fields["method"] = self.settings_method
        return self.settings_class(**fields)

    def default_checkpoint_path(self) -> Path:
        return ASSETS / self.default_checkpoint

    def load_backend(self, checkpoint, cfg):
        return _resolve(self.loader)(checkpoint, cfg)

    def make_backend(self, model, variables, cfg, spec):
        """The method's backend (settings ``cfg``, spectral settings ``spec``) for ``model``, a model of its
        family (:meth:`Family.model_from_config`), with ``variables`` of any origin (trained or random)."""
        if self.backend is None:
            raise RegistryError(f"the method {self.name!r} has no backend for a given model")
        return _resolve(self.backend)(model, variables, cfg, spec)


def _diffusion(name: str) -> Method:
    return Method(name, "ncsnpp", "jaxse.diffusion.udiffse:PosteriorConfig", name,
                  "jaxse.prior.backend:load_backend", "prior", backend="jaxse.diffusion.backend:DiffusionBackend")


def _rvae(algorithm: str) -> Method:
    return Method("rvae-" + algorithm, "rvae", "jaxse.rvae.posterior:RVAEPosteriorConfig", algorithm,
                  "jaxse.rvae.backend:load_backend", "rvae", backend="jaxse.rvae.backend:make_backend")


# Kept in sync with jaxse.diffusion.udiffse.METHODS and jaxse.rvae.posterior.METHODS (tested).
_METHODS = {m.name: m for m in (
    _diffusion("udiffse"), _diffusion("udiffse+"),
    _rvae("vem"), _rvae("mhem"), _rvae("malaem"), _rvae("ldem"),
    Method("sgmse+", "sgmse", "jaxse.sgmse.backend:SGMSEConfig", "sgmse+", "jaxse.sgmse.backend:load_sgmse",
           "sgmse", backend="jaxse.sgmse.backend:SGMSEBackend"),
    Method("supervised", "supervised", "jaxse.sgmse.backend:SupervisedConfig", "supervised",
           "jaxse.sgmse.backend:load_supervised", "supervised", backend="jaxse.sgmse.backend:SupervisedBackend"),
    Method("av-udiffse", "av", "jaxse.diffusion.udiffse:PosteriorConfig", "udiffse", "jaxse.av.backend:load_backend",
           "av", conditioning="visual features", backend="jaxse.av.backend:AVBackend"),
    Method("av-udiffse+", "av", "jaxse.diffusion.udiffse:PosteriorConfig", "udiffse+",
           "jaxse.av.backend:load_backend", "av", conditioning="visual features", backend="jaxse.av.backend:AVBackend"),
)}
METHODS = tuple(_METHODS)  # enhance.py --method choices, in the order the help lists them


def method(name: str) -> Method:
    if name not in _METHODS:
        raise RegistryError(f"unknown method {name!r} (one of {', '.join(METHODS)})")
    return _METHODS[name]


def methods_of(family_name: str) -> tuple[str, ...]:
    return tuple(n for n, m in _METHODS.items() if m.family == family_name)


def method_named_by(family_name: str, settings_method: str) -> str:
    """The method of ``family_name`` whose settings say ``method=settings_method`` (``"ldem"`` -> ``"rvae-ldem"``)."""
    for n in methods_of(family_name):
        if _METHODS[n].settings_method == settings_method:
            return n
    raise RegistryError(f"no {family_name} method has the settings method {settings_method!r}")


# ---------------------------------------------------------------------------------------- registering


def register_family(name: str, target: str) -> None:
    """Add a family: ``target`` is ``"module:attribute"`` of its :class:`Family` object (imported when first
    asked for). The built-in families are the table at the top of this module; this is for a family that lives
    outside the package (a plug-in, a test's toy family). ``RegistryError`` if the name is taken."""
    if name in _FAMILIES:
        raise RegistryError(f"model family {name!r} is already registered")
    if ":" not in target:
        raise RegistryError(f"family target {target!r} is not 'module:attribute'")
    _FAMILIES[name] = target


def register_method(m: Method) -> None:
    """Add an enhancement method (its family must be registered). ``RegistryError`` if the name is taken."""
    global METHODS
    if m.name in _METHODS:
        raise RegistryError(f"method {m.name!r} is already registered")
    if m.family not in _FAMILIES:
        raise RegistryError(f"method {m.name!r}: unknown model family {m.family!r} (register it first)")
    _METHODS[m.name] = m
    METHODS = tuple(_METHODS)
