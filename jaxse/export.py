"""Inference-only exports of training runs, written by the run's model family (:mod:`jaxse.registry`).

* :func:`export_training_variables`: a running training's new best model (``training.export_dir``), swapped in
  atomically; the family writes it (:meth:`jaxse.registry.Family.export`).
* ``python -m jaxse.export WORKDIR -o OUT [--step N]`` (:func:`main`): a kept checkpoint of a run, exported by
  the family its metadata records (:meth:`jaxse.registry.Family.export_checkpoint`): an NCSN++ family's EMA
  weights as a prior in the checkpoint layout (:func:`jaxse.diffusion.export.export_prior`, read back by
  :func:`jaxse.core.loading.load_checkpoint`), an RVAE run as ``rvae.json`` + ``rvae_params.npz`` +
  ``MODEL_CARD.md`` in the format of :func:`jaxse.rvae.convert.load_rvae` (:mod:`jaxse.rvae.export`).
"""

from __future__ import annotations

from pathlib import Path

from jaxse import registry


def export_training_variables(directory, model, variables, spec, step: int, valid_loss: float, config,
                              info: dict | None = None, family: registry.Family | None = None) -> Path:
    """Replace ``directory`` with the model of a running training (``training.export_dir``), atomically.

    The model's family writes the export (:meth:`jaxse.registry.Family.export`: a diffusion prior by
    :func:`jaxse.diffusion.export.export_prior` with its EMA validation loss and training config in the
    metadata, an RVAE by :func:`jaxse.rvae.training.export_rvae`). The new export is written
    beside ``directory`` and swapped in by renames, so an interrupted run leaves the previous export whole.
    ``family``: the model's family when the caller has it (default: looked up from ``model``).
    """
    import shutil

    directory = Path(directory).absolute()
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = directory.with_name(directory.name + ".tmp")
    old = directory.with_name(directory.name + ".old")
    for leftover in (tmp, old):
        shutil.rmtree(leftover, ignore_errors=True)
    family = registry.family_of_model(model) if family is None else family
    family.export(tmp, model, variables, spec, step, valid_loss, config, info or {})
    if directory.exists():
        directory.rename(old)
    tmp.rename(directory)
    shutil.rmtree(old, ignore_errors=True)
    return directory


def main(argv=None) -> int:
    """``python -m jaxse.export WORKDIR -o OUTDIR [--step N]``: a training run's model as an inference export.

    Without ``--step`` the kept checkpoint with the lowest (EMA) validation loss (from
    ``WORKDIR/metrics.jsonl``) is exported; its validation loss and training config go into the metadata.
    The run's family writes it: a diffusion prior's EMA weights as a prior; an RVAE run (no EMA) as
    ``rvae.json`` + ``rvae_params.npz`` + ``MODEL_CARD.md``, the format of :func:`jaxse.rvae.convert.load_rvae`.
    """
    import argparse
    import json
    import sys

    from jaxse.core.checkpoint import read_checkpoint_metadata

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
    meta = read_checkpoint_metadata(workdir / "checkpoints" / str(step))
    family = registry.family(registry.family_name_of_metadata(meta))
    _, line = family.export_checkpoint(workdir, step, args.output, records)
    print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
