"""Exports of RVAE training runs (``train.py`` with ``configs/rvae.py``): a kept checkpoint or a running run's
best model written as ``rvae.json`` + ``rvae_params.npz`` + ``MODEL_CARD.md``, the format of
:func:`jaxse.rvae.convert.load_rvae` (:func:`jaxse.rvae.training.export_rvae` writes the files).

:func:`export_rvae_run` is what ``python -m jaxse.export`` runs for an RVAE workdir (through
:meth:`jaxse.rvae.family.RVAEFamily.export_checkpoint`); :func:`rvae_run_info` is the ``rvae.json`` info of
both that export and the ``training.export_dir`` one (:meth:`jaxse.rvae.family.RVAEFamily.export`).
"""

from __future__ import annotations

from pathlib import Path

import jax

import jaxse


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
    from jaxse.core.loading import load_checkpoint
    from jaxse.rvae.training import export_rvae

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
