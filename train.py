"""Train a model of any family (thin CLI around :func:`jaxse.training.train_and_evaluate`): a clean-speech
diffusion prior, the RVAE, SGMSE+ (plain or weighted loss) or the supervised baseline.

Single process (all local devices, data parallel)::

    python train.py --config configs/cpu_small.py --workdir runs/cpu_small
    python train.py --config configs/udiffse_65m.py --workdir runs/u65 --config.training.batch_size=32
    python train.py --config configs/rvae.py --workdir runs/rvae      # the RVAE speech model (model.family "rvae")
    python train.py --config configs/weighted_cpu.py --workdir runs/w   # SGMSE+ with the weighted loss, small

A config or data error (a missing folder, a paired tree with a file on one side only, an empty noise folder,
a reversed SNR range, ...) is one ``train.py: error: ...`` line (exit code 2) before anything is written.

``python -m jaxse.export WORKDIR -o OUT`` turns a run into an inference model (the checkpoint with the lowest
validation loss): a prior directory for the diffusion models, ``rvae.json`` + ``rvae_params.npz`` +
``MODEL_CARD.md`` for the RVAE.

Config values are overridden with ``--config.<group>.<field>=value`` (the config is locked, so a typo in a
field name is an error). Rerunning the same command on an existing workdir resumes from its latest
checkpoint (``WORKDIR/checkpoints``) and reproduces the uninterrupted run exactly; raise
``--config.training.num_steps`` to train further. Outputs: ``WORKDIR/checkpoints``, ``WORKDIR/tb``
(TensorBoard), ``WORKDIR/metrics.jsonl``, ``WORKDIR/samples/step_XXXXXX_k.wav`` (diffusion priors only). An RVAE
run that stopped early (``training.early_stop_patience_epochs``) stays stopped when rerun.

Multi-host: start the same command once per process, adding the coordinator (host:port of process 0,
reachable from all), the number of processes and each process's id::

    # host A (process 0)                                    # host B (process 1)
    python train.py --config ... --workdir W \\              python train.py --config ... --workdir W \\
      --coordinator_address=hostA:12345 \\                     --coordinator_address=hostA:12345 \\
      --num_processes=2 --process_id=0                        --num_processes=2 --process_id=1

The flags default to the environment variables ``JAXSE_COORDINATOR_ADDRESS``, ``JAXSE_NUM_PROCESSES`` and
``JAXSE_PROCESS_ID``; ``--distributed`` instead lets ``jax.distributed.initialize()`` detect the cluster
(SLURM, Open MPI, ...). ``WORKDIR`` must be one shared filesystem path for all processes (orbax writes the
checkpoints collectively). ``training.batch_size`` is the global batch; every process loads only its own
rows. Only process 0 writes logs, metrics and samples. On CPU the processes communicate through gloo.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

FLAGS = flags.FLAGS


def _env_int(name: str):
    value = os.environ.get(name)
    return int(value) if value else None


config_flags.DEFINE_config_file("config", None, "Training config file (configs/*.py).", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and samples (resumed if it exists).")
flags.DEFINE_string("coordinator_address", os.environ.get("JAXSE_COORDINATOR_ADDRESS"),
                    "host:port of process 0, for a multi-process run.")
flags.DEFINE_integer("num_processes", _env_int("JAXSE_NUM_PROCESSES"), "Number of processes of a multi-process run.")
flags.DEFINE_integer("process_id", _env_int("JAXSE_PROCESS_ID"), "This process's index in [0, num_processes).")
flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() with cluster auto-detection.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from jaxse import training
    from jaxse.parallel import initialize_distributed

    initialize_distributed(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id, auto=FLAGS.distributed)
    import jax

    if not FLAGS["verbosity"].present or jax.process_index() != 0:
        logging.set_verbosity(logging.WARNING)  # orbax logs every checkpoint step at INFO; -v 0 shows it
    try:
        training.train_and_evaluate(FLAGS.config, FLAGS.workdir)
    except training.SetupError as exc:  # bad config or data: one line, nothing written
        sys.stderr.write(f"train.py: error: {exc}\n")
        sys.exit(2)


if __name__ == "__main__":
    app.run(main)
