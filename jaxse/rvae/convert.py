"""Import RVAE weights from the reference PyTorch implementation into :mod:`jaxse.rvae.net` parameters.

Sources:

* a PyTorch ``state_dict`` saved with ``torch.save`` (``.pt``/``.pth``; e.g. ``RVAE_final_epoch294.pt``), read
  with a lazy ``import torch`` (``pip install 'jaxse[torch]'``); a dict holding it under ``state_dict`` or
  ``model_state_dict`` is accepted too;
* a ``.npz`` of ``param/<state_dict name>`` arrays (the layout of ``../shared/golden/rvae_pretrained.npz``);
* a directory or ``.npz`` written by :func:`save_rvae` (this package's own format).

The mapping is a renaming plus a transpose of every matrix: ``<rnn>.weight_ih_l0[_reverse]`` (4H, in) ->
``<rnn>/l0[_reverse]/kernel_ih`` (in, 4H), ``weight_hh`` -> ``kernel_hh``, ``bias_ih``/``bias_hh`` kept apart
(they are summed when the cell runs), ``<linear>.weight`` (out, in) -> ``kernel`` (in, out). ``rnn_g_x``,
``rnn_g_z``, ``inf_mean`` and ``inf_logvar`` go to the ``encoder`` subtree, ``rnn_h`` and ``gen_logvar`` to
``decoder``. Only the configuration of the published models is supported: one LSTM layer per recurrence and no
dense layers around them (the reference's ``mlp_*`` lists empty); anything else is a :class:`ConversionError`.
The sizes and directions are read from the tensor shapes.

``python -m jaxse.rvae_convert IN.pt -o OUTDIR`` writes ``OUTDIR/rvae.json`` (config, parameter count, source
file name and sha256) and ``OUTDIR/rvae_params.npz``.

Licence note: the published RVAE checkpoints are GPL-3.0. Converted weights are a derived work of them; keep
them out of anything distributed under an incompatible licence (this package ships none).
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Mapping

import jax
import numpy as np

from jaxse.pytree import count_params
from jaxse.rvae.net import RVAEConfig, abstract_params
from jaxse.errors import one_line

FORMAT = "jaxse-rvae-v1"
CONFIG_FILE = "rvae.json"
PARAMS_FILE = "rvae_params.npz"
_ENCODER = ("rnn_g_x", "rnn_g_z", "inf_mean", "inf_logvar")
_DECODER = ("rnn_h", "gen_logvar")
_RNN_RE = re.compile(r"(weight|bias)_(ih|hh)_l(\d+)(_reverse)?")


class ConversionError(ValueError):
    pass


def _strip(state: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = {}
    for k, v in state.items():
        for prefix in ("param/", "module."):
            if k.startswith(prefix):
                k = k[len(prefix):]
        out[k] = np.asarray(v)
    return out


def infer_config(state: Mapping[str, np.ndarray]) -> RVAEConfig:
    """The :class:`RVAEConfig` of a reference state_dict, from its tensor shapes."""
    state = _strip(state)
    dense = sorted(k for k in state if k.startswith("mlp_"))
    if dense:
        raise ConversionError(f"dense layers around the recurrences are not supported (found {dense[:3]})")
    deep = sorted(k for k in state if (m := _RNN_RE.search(k)) and m.group(3) != "0")
    if deep:
        raise ConversionError(f"only one-layer LSTMs are supported (found {deep[:3]})")
    needed = ("rnn_g_x.weight_ih_l0", "rnn_g_x.weight_hh_l0", "rnn_g_z.weight_hh_l0", "inf_mean.weight",
              "rnn_h.weight_hh_l0", "gen_logvar.weight")
    missing = [k for k in needed if k not in state]
    if missing:
        raise ConversionError(f"not an RVAE state_dict: missing {missing}")
    return RVAEConfig(
        x_dim=int(state["rnn_g_x.weight_ih_l0"].shape[1]),
        z_dim=int(state["inf_mean.weight"].shape[0]),
        dim_rnn_g_x=int(state["rnn_g_x.weight_hh_l0"].shape[1]),
        dim_rnn_g_z=int(state["rnn_g_z.weight_hh_l0"].shape[1]),
        dim_rnn_h=int(state["rnn_h.weight_hh_l0"].shape[1]),
        bidir_g_x="rnn_g_x.weight_ih_l0_reverse" in state,
        bidir_h="rnn_h.weight_ih_l0_reverse" in state,
    )


def _torch_name(path: tuple[str, ...]) -> str:
    """('encoder', 'rnn_g_x', 'l0_reverse', 'kernel_ih') -> 'rnn_g_x.weight_ih_l0_reverse'."""
    if len(path) == 4:
        _, module, direction, leaf = path
        kind, gate = leaf.split("_")  # kernel_ih / bias_hh
        suffix = direction[1:]  # "0" or "0_reverse"
        return f"{module}.{'weight' if kind == 'kernel' else 'bias'}_{gate}_l{suffix}"
    _, module, leaf = path
    return f"{module}.{'weight' if leaf == 'kernel' else 'bias'}"


def state_dict_to_params(state: Mapping[str, np.ndarray], cfg: RVAEConfig | None = None, strict: bool = True,
                         dtype=np.float32):
    """Map a reference RVAE state_dict onto our parameter dict (``{"encoder", "decoder"}``, numpy arrays)."""
    state = _strip(state)
    cfg = infer_config(state) if cfg is None else cfg
    used = set()

    def convert(path, leaf):
        keys = tuple(getattr(k, "key", str(k)) for k in path)
        name = _torch_name(keys)
        if name not in state:
            raise ConversionError(f"the state_dict has no {name!r}, needed by the model")
        used.add(name)
        v = np.asarray(state[name], dtype=dtype)
        if v.ndim == 2:
            v = v.T
        if v.shape != tuple(leaf.shape):
            raise ConversionError(f"{name}: shape {state[name].shape} does not fit the model ({leaf.shape} "
                                  "after transposing)")
        return v

    params = jax.tree_util.tree_map_with_path(convert, abstract_params(cfg))
    extra = sorted(set(state) - used)
    if strict and extra:
        raise ConversionError(f"{len(extra)} state_dict entries do not belong to the RVAE, e.g. {extra[:3]}")
    return params


def load_torch_state_dict(path) -> dict[str, np.ndarray]:
    """Read a ``torch.save``-d state_dict (needs PyTorch)."""
    try:
        import torch
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ConversionError("reading a PyTorch .pt needs PyTorch: pip install 'jaxse[torch]'") from e
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # pickle, zip or EOF errors for a damaged file
        raise ConversionError(f"{path}: cannot be read as a PyTorch state_dict ({type(e).__name__}: {e})") from e
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model_state_dict"):
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not all(hasattr(v, "detach") for v in obj.values()):
        raise ConversionError(f"{path}: not a state_dict of tensors")
    return {k: v.detach().cpu().numpy() for k, v in obj.items()}


def _flatten(params) -> dict[str, np.ndarray]:
    flat = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        flat["/".join(getattr(k, "key", str(k)) for k in path)] = np.asarray(leaf)
    return flat


def _unflatten(flat: Mapping[str, np.ndarray]):
    out: dict = {}
    for name, v in flat.items():
        node = out
        *parents, leaf = name.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = np.asarray(v)
    return out


def save_rvae(directory, params, extra: dict | None = None) -> Path:
    """Write ``params`` as ``DIR/rvae_params.npz`` plus ``DIR/rvae.json`` (config and metadata)."""
    from jaxse.rvae.net import config_from_params

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    params = jax.device_get(params)
    cfg = config_from_params(params)
    np.savez(directory / PARAMS_FILE, **_flatten(params))
    meta = {"format": FORMAT, "family": "rvae", "config": cfg.to_dict(), "num_params": count_params(params),
            **(extra or {})}
    (directory / CONFIG_FILE).write_text(json.dumps(meta, indent=1) + "\n")
    return directory


def load_rvae(path) -> tuple[RVAEConfig, dict]:
    """``(cfg, params)`` from a :func:`save_rvae` directory, a ``.npz`` (ours or ``param/...``) or a ``.pt``."""
    path = Path(path)
    if path.is_dir():
        meta_path, npz = path / CONFIG_FILE, path / PARAMS_FILE
        if not meta_path.is_file() or not npz.is_file():
            raise ConversionError(f"{path}: not an RVAE directory (needs {CONFIG_FILE} and {PARAMS_FILE})")
        meta = json.loads(meta_path.read_text())
        if meta.get("format") != FORMAT:
            raise ConversionError(f"{meta_path}: unknown format {meta.get('format')!r}")
        with np.load(npz) as d:
            params = _unflatten({k: d[k] for k in d.files})
        cfg = RVAEConfig(**meta["config"])
        _check(params, cfg, npz)
        return cfg, params
    if not path.is_file():
        raise ConversionError(f"{path}: no such file")
    if path.suffix == ".npz":
        with np.load(path) as d:
            arrays = {k: d[k] for k in d.files}
        if any(k.startswith(("encoder/", "decoder/")) for k in arrays):
            params = _unflatten({k: v for k, v in arrays.items() if k.startswith(("encoder/", "decoder/"))})
            from jaxse.rvae.net import config_from_params

            cfg = config_from_params(params)
            _check(params, cfg, path)
            return cfg, params
        state = {k: v for k, v in arrays.items() if k.startswith("param/")}
        if not state:
            raise ConversionError(f"{path}: no 'param/*' (state_dict) or 'encoder/*' arrays")
    elif path.suffix in (".pt", ".pth"):
        state = load_torch_state_dict(path)
    else:
        raise ConversionError(f"{path}: expected a .pt/.pth state_dict, a .npz or an RVAE directory")
    cfg = infer_config(state)
    return cfg, state_dict_to_params(state, cfg)


def _check(params, cfg: RVAEConfig, where):
    want = jax.tree_util.tree_map(lambda a: tuple(a.shape), abstract_params(cfg))
    got = jax.tree_util.tree_map(lambda a: tuple(a.shape), params)
    if want != got:
        raise ConversionError(f"{where}: parameter shapes do not match an RVAE of config {cfg}")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def main(argv=None) -> int:
    """``python -m jaxse.rvae_convert IN.pt -o OUTDIR``: import reference RVAE weights."""
    import argparse
    import sys

    ap = argparse.ArgumentParser(prog="python -m jaxse.rvae_convert", description=main.__doc__)
    ap.add_argument("input", help="reference RVAE state_dict (.pt/.pth) or .npz of 'param/<name>' arrays")
    ap.add_argument("-o", "--output", required=True, help="directory to write rvae.json and rvae_params.npz to")
    args = ap.parse_args(argv)
    src = Path(args.input)
    try:
        cfg, params = load_rvae(src)
    except ConversionError as e:
        print(f"error: {one_line(e, None)}", file=sys.stderr)
        return 2
    extra = {"source": src.name}
    if src.is_file():
        extra["source_sha256"] = _sha256(src)
    out = save_rvae(args.output, params, extra)
    kind = "non-causal" if cfg.bidir_h else "causal"
    print(f"wrote {out}: {kind} RVAE x_dim={cfg.x_dim} z_dim={cfg.z_dim}, {count_params(params):,} parameters")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
