"""Inference-only priors: a model, its (EMA) variables and metadata, without optimizer state.

An exported prior has the same on-disk layout as a training workdir (``DIR/checkpoints/<step>/{state,
metadata}``) with ``state = {"ema_params", "constants"}``, so :func:`jaxse.training.load_checkpoint`
reads both. It is what ``python -m jaxse.convert`` writes for imported reference checkpoints and what
ships inside the package as the default prior.

An RVAE training run (``configs/rvae.py``) is exported instead in the ``rvae.json`` + ``rvae_params.npz``
format of :func:`jaxse.rvae.convert.load_rvae`, with a MODEL_CARD.md (:func:`export_rvae_run`).
"""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp

import jaxse
from jaxse.pytree import count_params
from jaxse import registry
from jaxse.diffusion.models import ScoreModel
from jaxse.spectral import SpecConfig
from jaxse.training import METADATA_ITEM, STATE_ITEM


def export_prior(directory, model: ScoreModel, variables, spec: SpecConfig = SpecConfig(), step: int = 0,
                 extra: dict | None = None) -> Path:
    """Write ``variables`` (``{"params", "constants"}``) as an inference-only prior at ``directory``."""
    directory = Path(directory).absolute()
    state = {"ema_params": jax.device_get(variables["params"]), "constants": jax.device_get(variables["constants"])}
    state = jax.tree.map(np.asarray, state)
    meta = {
        "format": "jaxse-checkpoint-v1",
        "kind": "inference-prior",
        "jaxse_version": jaxse.__version__,
        "step": int(step),
        "sample_rate": int(spec.sample_rate),
        "num_bins": int(spec.num_bins),
        "num_params": count_params(variables["params"]),
        "model": model.to_dict(),
        "spec": spec.to_dict(),
        **(extra or {}),
    }
    options = ocp.CheckpointManagerOptions(create=True, enable_async_checkpointing=False)
    with ocp.CheckpointManager(directory / "checkpoints", options=options,
                               item_names=(STATE_ITEM, METADATA_ITEM)) as mngr:
        mngr.save(int(step), args=ocp.args.Composite(**{STATE_ITEM: ocp.args.StandardSave(state),
                                                        METADATA_ITEM: ocp.args.JsonSave(meta)}), force=True)
        mngr.wait_until_finished()
    return directory



def export_training_variables(directory, model, variables, spec, step: int, valid_loss: float, config,
                              info: dict | None = None) -> Path:
    """Replace ``directory`` with the model of a running training (``training.export_dir``), atomically.

    The model's family writes the export (:meth:`jaxse.registry.Family.export`: a diffusion prior by
    :func:`export_prior` with its EMA validation loss and training config in the metadata, an RVAE by
    :func:`jaxse.rvae.training.export_rvae`). The new export is written
    beside ``directory`` and swapped in by renames, so an interrupted run leaves the previous export whole.
    """
    import shutil

    directory = Path(directory).absolute()
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = directory.with_name(directory.name + ".tmp")
    old = directory.with_name(directory.name + ".old")
    for leftover in (tmp, old):
        shutil.rmtree(leftover, ignore_errors=True)
    registry.family_of_model(model).export(tmp, model, variables, spec, step, valid_loss, config, info or {})
    if directory.exists():
        directory.rename(old)
    tmp.rename(directory)
    shutil.rmtree(old, ignore_errors=True)
    return directory


def _corpus_of(train_dir) -> str | None:
    """``"speechocean762"`` when ``train_dir`` is the project's data pack (its LICENSES.md names the corpus)."""
    if not train_dir:
        return None
    from jaxse.data import split_roots

    licenses = split_roots(train_dir)[0].parent / "LICENSES.md"
    try:
        return "speechocean762" if "speechocean762" in licenses.read_text() else None
    except OSError:
        return None


def _history(records: dict, points: int = 10) -> list:
    """About ``points`` evenly spaced ``[step, valid loss]`` pairs of a run, the last one included."""
    steps = sorted(s for s, r in records.items() if "valid/loss" in r)
    if not steps:
        return []
    stride = max(1, -(-len(steps) // points))
    picked = steps[::-1][::stride][::-1]
    return [[s, float(records[s]["valid/loss"])] for s in picked]


def export_rvae_run(workdir, output, step: int, records: dict) -> Path:
    """Export checkpoint ``step`` of an RVAE run as ``OUTPUT/{rvae.json, rvae_params.npz, MODEL_CARD.md}``.

    ``records``: the ``metrics.jsonl`` records by step (for the validation loss and its terms).
    """
    from jaxse.rvae.training import export_rvae
    from jaxse.training import load_checkpoint

    _, variables, meta = load_checkpoint(Path(workdir) / "checkpoints" / str(step))
    rec = records.get(step, {})
    info = rvae_run_info(step, meta.get("data", {}), meta.get("config", {}), meta.get("spec"), {
        "valid_loss": rec.get("valid/loss"), "valid_recon": rec.get("valid/recon"), "valid_kl": rec.get("valid/kl"),
        "valid_history": _history(records)})
    return export_rvae(output, jax.device_get(variables["params"]), info)


def rvae_run_info(step: int, data: dict, train_config: dict, spec, extra: dict) -> dict:
    """The ``rvae.json`` info of an RVAE exported from a ``train.py`` run (a kept checkpoint or a running run)."""
    data = dict(data)
    data["corpus"] = _corpus_of(train_config.get("data", {}).get("train_dir"))
    spe = data.get("steps_per_epoch")
    return {"source": "jaxse train.py", "jaxse_version": jaxse.__version__, "step": int(step),
            "epoch": step / spe if spe else None, **extra, "spec": spec, "data": data, "training": train_config}


def main(argv=None) -> int:
    """``python -m jaxse.export WORKDIR -o OUTDIR [--step N]``: a training run's EMA weights as a prior.

    Without ``--step`` the kept checkpoint with the lowest EMA validation loss (from
    ``WORKDIR/metrics.jsonl``) is exported; its validation loss and training config go into the metadata.
    An RVAE run (no EMA) is written as ``rvae.json`` + ``rvae_params.npz`` + ``MODEL_CARD.md``, the format of
    :func:`jaxse.rvae.convert.load_rvae`.
    """
    import argparse
    import json
    import sys

    from jaxse.training import load_checkpoint, read_checkpoint_metadata

    ap = argparse.ArgumentParser(prog="python -m jaxse.export", description=main.__doc__)
    ap.add_argument("workdir", help="train.py workdir")
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("--step", type=int, default=None)
    args = ap.parse_args(argv)
    workdir = Path(args.workdir)
    kept = sorted(int(p.name) for p in (workdir / "checkpoints").glob("*") if p.name.isdigit())
    if not kept:
        print(f"error: no checkpoints in {workdir / 'checkpoints'}", file=sys.stderr)
        return 2
    valid, records = {}, {}
    metrics = workdir / "metrics.jsonl"
    if metrics.exists():
        for line in metrics.read_text().splitlines():
            rec = json.loads(line)
            if "valid/loss" in rec:
                valid[int(rec["step"])] = float(rec["valid/loss"])
                records.setdefault(int(rec["step"]), {}).update(rec)
    step = args.step
    if step is None:
        scored = [s for s in kept if s in valid]
        step = min(scored, key=valid.get) if scored else kept[-1]
    elif step not in kept:
        print(f"error: step {step} is not among the kept checkpoints {kept}", file=sys.stderr)
        return 2
    train_meta = read_checkpoint_metadata(workdir / "checkpoints" / str(step))
    if registry.family_name_of_metadata(train_meta) == "rvae":
        out = export_rvae_run(workdir, args.output, step, records)
        info = json.loads((out / "rvae.json").read_text())
        print(f"wrote {out}: RVAE step {step}, valid loss {valid.get(step)}, {info['num_params']:,} parameters")
        return 0
    model, variables, meta = load_checkpoint(workdir / "checkpoints" / str(step))
    out = export_prior(args.output, model, variables, SpecConfig(**meta["spec"]), step=step,
                       extra={"valid_loss_ema": valid.get(step), "train_config": train_meta.get("config")})
    print(f"wrote {out}: step {step}, EMA valid loss {valid.get(step)}, {count_params(variables['params']):,} parameters")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
