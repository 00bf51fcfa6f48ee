"""Train a model of any family (thin CLI around :func:`jaxse.training.train_and_evaluate`): a clean-speech
diffusion prior, the RVAE, SGMSE+ (plain or weighted loss) or the supervised baseline.

Single process (all local devices, data parallel)::

    python train.py --config configs/cpu_small.py --workdir runs/cpu_small
    python train.py --config configs/udiffse_65m.py --workdir runs/u65 --config.training.batch_size=32
    python train.py --config configs/rvae.py --workdir runs/rvae      # the RVAE speech model (model.family "rvae")
    python train.py --config configs/weighted_cpu.py --workdir runs/w   # SGMSE+ with the weighted loss, small

Usage errors behave like enhance.py's: one ``train.py: error: ...`` line on stderr naming the flag (or
field) and the rule, exit code 2, before anything is written (no workdir is created). That covers a bad flag
(unknown, malformed: ``--config.training.batch_size=abc``), a missing or broken ``--config`` file, an override
of a field the config does not have (``--config.training.nosuch=1``), no ``--workdir`` or one that is a file,
a bad ``JAXSE_*`` variable, values no run can train with (:func:`jaxse.training.check_config_values`: batch
sizes, crop frames and the log/eval/checkpoint intervals < 1, a learning rate that is not a finite number > 0,
Adam's b1/b2 outside [0, 1), ...; e.g. ``training.lr must be a finite number > 0, got -1.0``) and config or
data errors (a missing folder, a paired tree with a file on one side only, an empty noise folder, a reversed
SNR range, ...).

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
``JAXSE_PROCESS_ID``. Each process says ``train.py: waiting for the coordinator at HOST:PORT (process I of N;
up to S s, --coordinator_timeout)`` and, if the run has not formed after ``--coordinator_timeout`` seconds
(default 300, or ``JAXSE_COORDINATOR_TIMEOUT``), ends with one line saying so (and whether anything answers
at the address), exit code 2. ``--distributed`` instead lets ``jax.distributed.initialize()`` detect the cluster
(SLURM, Open MPI, ...). ``WORKDIR`` must be one shared filesystem path for all processes (orbax writes the
checkpoints collectively). ``training.batch_size`` is the global batch; every process loads only its own
rows. Only process 0 writes logs, metrics and samples. On CPU the processes communicate through gloo.
"""

from __future__ import annotations

import sys
from pathlib import Path

from absl import app, flags, logging
from ml_collections import config_flags

from jaxse.cli import flag_value
from jaxse.errors import one_line

FLAGS = flags.FLAGS

config_flags.DEFINE_config_file("config", None, "Training config file (configs/*.py).", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and samples (resumed if it exists).")
flags.DEFINE_string("coordinator_address", None, "host:port of process 0, for a multi-process run "
                    "(default: $JAXSE_COORDINATOR_ADDRESS).")
flags.DEFINE_integer("num_processes", None, "Number of processes of a multi-process run "
                     "(default: $JAXSE_NUM_PROCESSES).")
flags.DEFINE_integer("process_id", None, "This process's index in [0, num_processes) (default: $JAXSE_PROCESS_ID).")
flags.DEFINE_float("coordinator_timeout", None, "Seconds to wait for the multi-process run to form (process 0 "
                   "reachable, every process joined) before giving up with an error (default: "
                   "$JAXSE_COORDINATOR_TIMEOUT, else 300).")
flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() with cluster auto-detection.")


def _usage_error(message) -> int:
    """One line on stderr; the exit code of a usage error (2)."""
    sys.stderr.write(f"train.py: error: {one_line(message, None)}\n")
    return 2


def _config_path(argv) -> str | None:
    """The value of ``--config`` on the command line (last one wins), before absl parses it."""
    return flag_value(argv, "config")


def _unknown_override(argv, config_file: str) -> str | None:
    """The first ``--config.A.B`` of ``argv`` that names no field of ``config_file``'s config, as a message."""
    import runpy

    try:
        config = runpy.run_path(config_file.split(":", 1)[0])["get_config"]()
    except Exception:  # noqa: BLE001 (the config could not be loaded a second time: no details)
        return None
    for a in argv[1:]:
        if a == "--":
            break
        if not a.startswith("--config."):
            continue
        name = a[len("--config."):].split("=", 1)[0]
        node, seen = config, []
        for key in name.split("."):
            fields = list(node.keys()) if hasattr(node, "keys") else []
            if key not in fields:
                group = ".".join(seen) or "the config"
                return (f"unknown --config.{name}: {group} has no field {key!r}"
                        + (f" (fields: {', '.join(sorted(fields))})" if fields else ""))
            node = node[key]
            seen.append(key)
    return None


def _parse_flags(argv):
    """absl's flag parsing (``app.run``'s ``flags_parser``) with every bad flag a usage error: one line, exit
    code 2, nothing written. That covers what absl refuses (an unknown flag, a malformed value such as
    ``--config.training.batch_size=abc``) and what loading the config raises (a missing or broken ``--config``
    file, an override of a field the config does not have: ``--config.training.nosuch=1``)."""
    try:
        return FLAGS(argv)
    except flags.Error as exc:
        sys.exit(_usage_error(exc))
    except Exception as exc:  # noqa: BLE001 (ml_collections loads the config file and applies overrides here)
        sys.exit(_usage_error(_config_error(argv, exc)))


def _config_error(argv, exc: BaseException) -> str:
    """The one line for ``exc``, raised while loading ``--config`` or applying its ``--config.*`` overrides."""
    path = _config_path(argv)
    if path is None:
        return one_line(exc)
    if not Path(path.split(":", 1)[0]).is_file():
        return f"--config {path}: no such file"
    message = _unknown_override(argv, path) if isinstance(exc, (AttributeError, KeyError)) else None
    return message or f"--config {path}: cannot load it ({type(exc).__name__}: {one_line(exc)})"


def main(argv):
    if len(argv) > 1:
        return _usage_error(f"unexpected arguments: {' '.join(argv[1:])}")
    if FLAGS.config is None:
        return _usage_error("--config FILE is required (a training config, e.g. configs/cpu_small.py)")
    try:  # a config file that failed to load (absl keeps the error until the config is first used)
        FLAGS.config.keys()
    except Exception as exc:  # noqa: BLE001
        return _usage_error(_config_error(sys.argv, exc))
    if not FLAGS.workdir:
        return _usage_error("--workdir DIR is required (the run's checkpoints, logs and samples; resumed if it exists)")
    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # orbax logs every checkpoint step at INFO; -v 0 shows it
    from jaxse import parallel, training

    try:  # the values no run can train with, before joining a multi-process run and before anything is written
        training.check_workdir(FLAGS.workdir)
        training.check_config_values(FLAGS.config)
        settings = parallel.distributed_settings(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id,
                                                 FLAGS.coordinator_timeout)
        parallel.initialize_distributed(**settings, auto=FLAGS.distributed, prog="train.py")
    except ValueError as exc:
        return _usage_error(exc)
    import jax

    if jax.process_index() != 0:
        logging.set_verbosity(logging.WARNING)
    try:
        training.train_and_evaluate(FLAGS.config, FLAGS.workdir)
    except training.SetupError as exc:  # bad config or data: one line, nothing written
        return _usage_error(exc)
    return 0


if __name__ == "__main__":
    app.run(main, flags_parser=_parse_flags)
