"""Import reference PyTorch weights (NCSN++ / NCSN++M state_dicts) into jaxse variables.

Sources: a ``.npz`` of ``param/<state_dict name>`` arrays (as in ``../shared/golden``), any mapping of
state_dict names to arrays, or a PyTorch Lightning ``.ckpt`` of the reference code (UDiffSE or
fast_UdiffSE), whose EMA weights are used by default. Reading ``.ckpt`` needs PyTorch
(``pip install jaxse[torch]``); nothing else here does.

The Flax modules are named after the reference ``all_modules`` indices, so the mapping is a renaming
plus layout changes: conv (O, I, kh, kw) -> (kh, kw, I, O); Linear (out, in) -> (in, out); NIN ``W`` is
already (in, out); GroupNorm ``weight`` -> ``scale``.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import ClassVar, Mapping

import jax
import numpy as np

from jaxse import registry
from jaxse.diffusion.models import ScoreModel
from jaxse.pytree import count_params


class ConversionError(ValueError):
    pass


def _flax_path_to_torch(path: tuple[str, ...]) -> str:
    """('all_modules_4', 'Conv_0', 'kernel') -> 'all_modules.4.Conv_0.weight'."""
    parts = []
    for p in path:
        m = re.fullmatch(r"all_modules_(\d+)", p)
        if m:
            parts += ["all_modules", m.group(1)]
        elif p == "norm":
            continue  # our GroupNorm wrapper's inner module
        else:
            parts.append(p)
    leaf = parts[-1]
    owner = parts[-2] if len(parts) >= 2 else ""
    if owner.startswith("NIN_"):
        parts[-1] = {"kernel": "W", "bias": "b"}[leaf]
    elif owner == "to_out":  # the cross-attention's output projection is a Sequential's first entry
        parts[-2:] = ["to_out", "0", {"kernel": "weight", "bias": "bias"}[leaf]]
    else:
        parts[-1] = {"kernel": "weight", "bias": "bias", "scale": "weight"}[leaf]
    return ".".join(parts)


def _to_flax_layout(name: str, value: np.ndarray, target_shape: tuple[int, ...]) -> np.ndarray:
    v = np.asarray(value, dtype=np.float32)
    if v.ndim == 4:  # conv (O, I, kh, kw) -> (kh, kw, I, O)
        v = v.transpose(2, 3, 1, 0)
    elif v.ndim == 2 and ".NIN_" not in name:  # Linear (out, in) -> (in, out)
        v = v.T
    if v.shape != tuple(target_shape):
        raise ConversionError(f"{name}: shape {value.shape} does not fit the model ({target_shape} after layout)")
    return v


def _strip_prefix(state: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Accept names with a ``dnn.`` (Lightning ScoreModel) or ``param/`` (golden npz) prefix."""
    out = {}
    for k, v in state.items():
        for prefix in ("param/", "dnn."):
            if k.startswith(prefix):
                k = k[len(prefix):]
        out[k] = v
    return out


def state_dict_to_variables(model: ScoreModel, state: Mapping[str, np.ndarray], strict: bool = True):
    """Map a reference NCSN++ state_dict onto ``model``'s variables (``{"params", "constants"}``)."""
    state = _strip_prefix(state)
    abstract = model.abstract_variables()
    used = set()

    def convert(path, leaf):
        keys = tuple(getattr(k, "key", getattr(k, "name", str(k))) for k in path)
        collection, rest = keys[0], keys[1:]
        if collection == "constants":
            name = "all_modules.0.W"
        else:
            name = _flax_path_to_torch(rest)
        if name not in state:
            raise ConversionError(f"the state_dict has no {name!r}, needed by the model (is it the right model size?)")
        used.add(name)
        return _to_flax_layout(name, state[name], leaf.shape)

    variables = jax.tree_util.tree_map_with_path(convert, abstract)
    extra = sorted(set(state) - used)
    if strict and extra:
        raise ConversionError(f"{len(extra)} state_dict entries do not belong to this model, e.g. {extra[:3]}")
    return variables


def load_npz_state_dict(path) -> dict[str, np.ndarray]:
    with np.load(path) as d:
        return load_npz_state_dict_from(d)


def load_npz_state_dict_from(arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The ``param/*`` entries of a golden-style archive already loaded as a mapping."""
    return {k: np.asarray(arrays[k]) for k in arrays if k.startswith("param/")}


def load_lightning_checkpoint(path, use_ema: bool = True) -> tuple[dict[str, np.ndarray], dict]:
    """Read a reference ``.ckpt``: returns (state_dict of the score network, hyper-parameters).

    With ``use_ema`` the torch_ema shadow parameters (stored in ``ckpt["ema"]["shadow_params"]``, in the
    order of the module's trainable parameters) replace the trainable weights, as the reference does at
    inference. The fixed Fourier weights are not in the EMA and come from the state_dict.
    """
    try:
        import torch
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ConversionError("reading a PyTorch .ckpt needs PyTorch: pip install 'jaxse[torch]'") from e
    try:
        ckpt = torch.load(str(path), map_location="cpu", weights_only=False)
    except Exception as e:  # torch raises many kinds (pickle, zip, EOF) for a damaged file
        raise ConversionError(f"{path}: cannot be read as a PyTorch checkpoint ({type(e).__name__}: {e})") from e
    if not isinstance(ckpt, dict):
        raise ConversionError(f"{path}: not a PyTorch Lightning checkpoint (a {type(ckpt).__name__})")
    if "state_dict" not in ckpt:
        raise ConversionError(f"{path}: not a PyTorch Lightning checkpoint (no 'state_dict')")
    sd = {k: v for k, v in ckpt["state_dict"].items() if k.startswith("dnn.")}
    if not sd:
        raise ConversionError(f"{path}: no 'dnn.*' entries in the checkpoint's state_dict")
    hparams = dict(ckpt.get("hyper_parameters", {}))
    if use_ema:
        ema = ckpt.get("ema")
        if not ema or "shadow_params" not in ema:
            raise ConversionError(f"{path}: no EMA weights in the checkpoint (pass use_ema=False to use the raw ones)")
        shadow = list(ema["shadow_params"])
        # torch_ema tracks model.parameters() with requires_grad, in registration order: the state_dict order
        # without buffers and without the fixed Fourier W.
        trainable = [k for k in ckpt["state_dict"] if not k.endswith("all_modules.0.W")]
        trainable = [k for k in trainable if k.startswith("dnn.")]
        if len(shadow) != len(trainable):
            raise ConversionError(
                f"{path}: {len(shadow)} EMA tensors for {len(trainable)} trainable network tensors")
        for k, v in zip(trainable, shadow):
            if tuple(v.shape) != tuple(sd[k].shape):
                raise ConversionError(f"{path}: EMA tensor for {k} has shape {tuple(v.shape)}, expected {tuple(sd[k].shape)}")
            sd[k] = v
    return {k: v.detach().cpu().numpy() for k, v in sd.items()}, hparams


@dataclasses.dataclass(frozen=True)
class ReferenceLayout:
    """What the tensor shapes of a reference NCSN++ state_dict say, for the families' detectors
    (:meth:`jaxse.registry.Family.reference_model`).

    Attributes:
      state: the state_dict, names without the ``dnn.`` / ``param/`` prefix.
      timed: whether it has a Fourier time embedding (``all_modules.0.W``).
      nf: base width, read from the input convolution (any width is recognised).
      in_channels: input channels of the network (2: a prior or the supervised net; 4: ``[x_t, y]``).
      num_modules: ``all_modules`` entries without the 3 time-embedding modules (independent of ``nf``).
      xattn_modules: indices of the modules with a ``cross_attention`` block (audio-visual fusion).
    """

    BIG_MODULES: ClassVar[int] = 74  # the 65M UDiffSE / SGMSE+ layout (4 levels of 2 res-blocks, attention)
    SMALL_MODULES: ClassVar[int] = 33  # NCSN++M (1 res-block per level, no attention)

    state: Mapping[str, np.ndarray]
    timed: bool
    nf: int
    in_channels: int
    num_modules: int
    xattn_modules: tuple[int, ...]

    def big(self) -> dict:
        """The NCSN++ fields of the 65M layout at this width."""
        return dict(nf=self.nf)

    def small(self) -> dict:
        """The NCSN++ fields of the NCSN++M layout at this width."""
        return dict(nf=self.nf, ch_mult=(1, 2, 2, 2), num_res_blocks=1, attn_resolutions=())

    @classmethod
    def of(cls, state: Mapping[str, np.ndarray]) -> "ReferenceLayout":
        state = _strip_prefix(state)
        indices = [int(m.group(1)) for k in state if (m := re.match(r"all_modules\.(\d+)\.", k))]
        if not indices:
            raise ConversionError("not an NCSN++ state_dict (no all_modules.* entries)")
        timed = "all_modules.0.W" in state
        first_conv = state.get("all_modules.3.weight" if timed else "all_modules.0.weight")
        if first_conv is None or np.ndim(first_conv) != 4:
            raise ConversionError("not an NCSN++ state_dict (no input convolution where the reference puts it)")
        xattn = sorted({int(m.group(1)) for k in state
                        if (m := re.match(r"all_modules\.(\d+)\.cross_attention\.", k))})
        return cls(state=state, timed=timed, nf=int(np.shape(first_conv)[0]), in_channels=int(np.shape(first_conv)[1]),
                   num_modules=1 + max(indices) - (3 if timed else 0), xattn_modules=tuple(xattn))


def read_reference_state(path, use_ema: bool = True) -> dict[str, np.ndarray]:
    """The state_dict of a reference ``.ckpt`` (EMA weights by default) or ``.npz``."""
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"{path}: no such file")
    if path.suffix == ".npz":
        return load_npz_state_dict(path)
    if path.suffix in (".ckpt", ".pt", ".pth"):
        return load_lightning_checkpoint(path, use_ema=use_ema)[0]
    raise ConversionError(f"{path}: expected a .ckpt (PyTorch Lightning) or .npz state_dict")


def import_reference(path, model=None, use_ema: bool = True):
    """Import reference weights from ``.ckpt`` or ``.npz``; returns ``(model, variables)``.

    When ``model`` is None it is inferred from the tensor shapes (:func:`infer_reference_model`): each family of
    NCSN++ networks recognises its own layouts (a prior, SGMSE+'s conditional model, the supervised baseline,
    the audio-visual prior), at any width ``nf``. The returned model's ``family`` says which; loaders check it
    (a conditional model never loads as a prior). The model's family may drop entries it does not import
    (:meth:`jaxse.registry.Family.reference_state`: e.g. a frozen feature extractor).
    """
    state = read_reference_state(path, use_ema)
    if model is None:
        model = infer_reference_model(state)
    state = registry.family(getattr(model, "family", None)).reference_state(state)
    return model, state_dict_to_variables(model, state)


def infer_reference_model(state: Mapping[str, np.ndarray]):
    """The model a reference NCSN++ state_dict belongs to: the first family whose detector
    (:meth:`jaxse.registry.Family.reference_model`) recognises its :class:`ReferenceLayout`."""
    layout = ReferenceLayout.of(state)
    for name in registry.family_names():
        model = registry.family(name).reference_model(layout)
        if model is not None:
            return model
    raise ConversionError(
        f"unknown NCSN++ layout: {layout.num_modules} modules, {layout.in_channels} input channels, "
        f"{'with' if layout.timed else 'without'} time embedding (known: the 65M UDiffSE prior, NCSN++M, SGMSE+'s "
        "conditional 4-channel net, the supervised 2-channel net without time embedding, NCSN++M with "
        "cross-attention)")


def main(argv=None) -> int:
    """``python -m jaxse.convert REFERENCE.ckpt -o OUTDIR``: import a reference checkpoint (a UDiffSE / UDiffSE+
    prior, an SGMSE+ conditional model or a supervised baseline) as a jaxse checkpoint of its family."""
    import argparse
    import sys

    from jaxse.diffusion.export import export_prior

    ap = argparse.ArgumentParser(prog="python -m jaxse.convert", description=main.__doc__)
    ap.add_argument("input", help="reference PyTorch Lightning .ckpt (UDiffSE or fast_UdiffSE) or .npz state_dict")
    ap.add_argument("-o", "--output", required=True, help="directory of the jaxse prior to write")
    ap.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA weights")
    args = ap.parse_args(argv)
    try:
        model, variables = import_reference(args.input, use_ema=not args.no_ema)
    except ConversionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = export_prior(args.output, model, variables, extra={"source": str(Path(args.input).name)})
    kind = registry.family(model.family).describe_model(model)
    print(f"wrote {out}: {kind}, NCSN++ nf={model.net.nf} ch_mult={model.net.ch_mult}, "
          f"{count_params(variables['params']):,} parameters (model family {model.family!r})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
