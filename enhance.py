"""Enhance noisy speech files with a diffusion prior or an RVAE prior (thin CLI around :mod:`jaxse.enhance`).

    python enhance.py INPUT -o OUTDIR [--method udiffse|udiffse+|rvae-vem|rvae-mhem|rvae-malaem|rvae-ldem|sgmse+|supervised
                                           |av-udiffse|av-udiffse+ --visual FEATURE_DIR]
                      [--checkpoint CKPT] [--seed N] [--batch-size B] [--chunk-frames F] [--dtype bfloat16]
                      [--overwrite] [--log FILE] [--row-by-row]
                      [--num_processes N --process_id I [--coordinator_address HOST:PORT] | --distributed]
                      [--coordinator_timeout SECONDS]
                      [--config.FIELD=VALUE ...]

INPUT is an audio file or a directory (searched recursively for anything libsndfile reads). OUTDIR mirrors
the input tree: same relative paths, same extensions, same sample rates and lengths (the priors run at
16 kHz; files are resampled there and back; multi-channel files are mixed down to mono). Rerunning the
command skips files whose output exists (``--overwrite`` redoes them); outputs are written atomically, so
an interrupted run leaves no partial file. One CSV row per file (``file, duration_s, seconds, rtf, status,
message``) is appended to ``OUTDIR/enhance_log.csv`` (or ``--log``). Bad files are logged and skipped (a
0-byte file as ``empty file``).

An output whose peak is implausible, above ``PEAK_RATIO_LIMIT`` (4) times the input's peak (or times -60 dBFS
for a quieter input; :func:`jaxse.enhance.peak_warning`), is still written (clipped to ``[-1, 1)`` in PCM
formats) and logged with status ``ok`` and a ``warning: output peak ... is Nx the input peak ...`` message; one
``WARNING`` line goes to stderr and the summary counts these files. (A diverged sampler, e.g. too few
``--config.num_steps``, is the usual cause.)

Exit codes: 0 when every file was enhanced or skipped (warnings included), 1 if any file failed, 2 for a usage
or checkpoint error. Usage errors are one ``enhance.py: error: ...`` line on stderr, given before any model
loads and leaving nothing behind: a bad flag (unknown, a malformed value, ``--method`` not one of the methods
below, ``--batch-size`` < 1, ``--chunk-frames`` not a positive multiple of 64), a missing INPUT, an ``-o`` or
``--log`` that cannot be created or written (under a file, a file itself, read-only, a full disk), an ``-o`` that
is or holds the input folder (the outputs would overwrite the inputs), an INPUT folder with no audio files, a
``--config.FIELD`` value out of its range (not finite, the wrong sign), or an ``-o`` in use by another run.

One run at a time per output folder: a run holds a lock (``flock``) on ``OUTDIR/.enhance.lock`` while it runs
(a process of a multi-process run: shared, plus ``OUTDIR/.enhance.lock.process-I-of-N`` of its own share), and a
second run on the same ``-o`` is refused at once (it does not wait) with one line, exit 2, before its model
loads. The lock dies with its process (a kill -9 leaves none behind). A full disk fails each file that cannot
be written (one ``FAILED`` line, nothing partial left, the run goes on; exit 1). Temporary files a killed run
left (``.NAME.<hex>.part``) are removed by the rerun, which says how many. Ctrl-C stops with one line
(``stopped; N files done, rerun the same command to finish``) and exit 130; the rerun resumes. Float outputs
carry no time-stamped PEAK chunk: two runs with the same seed give byte-identical files.

Methods: ``udiffse`` / ``udiffse+`` (posterior sampling with a diffusion prior, :mod:`jaxse.diffusion.udiffse`) and
``rvae-vem`` / ``rvae-mhem`` / ``rvae-malaem`` / ``rvae-ldem`` (EM with an RVAE speech prior and an NMF noise
model, :mod:`jaxse.rvae.posterior`); ``sgmse+`` and ``supervised``, the supervised comparisons trained on
noisy/clean pairs (:mod:`jaxse.sgmse`; a ``--checkpoint`` of their family is required). All share the batching,
device sharding, chunking, resume and logging.

Several processes (hosts) share one data set: start the same command once per process with
``--num_processes=N --process_id=I`` (a static split: no coordination, each process starts, stops and reruns
on its own), or with ``--coordinator_address=HOST:PORT --num_processes=N --process_id=I`` / ``--distributed``
(``jax.distributed``, as ``train.py``; the environment variables ``JAXSE_COORDINATOR_ADDRESS``,
``JAXSE_NUM_PROCESSES``, ``JAXSE_PROCESS_ID`` set the same; a bad value is a usage error). With a coordinator,
each process says it is waiting for it and gives up with one line (exit code 2) if the run has not formed
within ``--coordinator_timeout`` seconds (default 300, or ``JAXSE_COORDINATOR_TIMEOUT``). Each process
enhances a disjoint share of the files, balanced by duration and the same on every rerun, on its own devices,
and logs to ``LOG.parts/process-I-of-N.csv``; as each process ends, the parts' new rows are appended to the one log
(``python -m jaxse.multihost OUTDIR`` does the same by hand). Outputs are bit-identical to a one-process run
on the same kind of machine and CPU thread count (on CPU, and with ``--row-by-row`` on accelerators): see
:mod:`jaxse.multihost`.

``av-udiffse`` / ``av-udiffse+``: UDiffSE / UDiffSE+ with an audio-visual prior (``--checkpoint`` of the ``av``
family, required) and ``--visual FEATURE_DIR``: each input's visual features, a ``.npy`` array ``(frames, dim)``
at 25 fps at the input's relative path with the suffix ``.npy`` (:mod:`jaxse.av.data`). A missing feature
file, a dimension the prior does not take or features more than 1 s longer or shorter than the audio fail
that file only (one line in the log).

``--checkpoint``: for the diffusion methods a train.py workdir or checkpoint directory, or a reference
``.ckpt`` / ``.npz`` (default: the prior shipped in ``jaxse/assets/prior``); for the RVAE methods a directory
with ``rvae.json`` (``python -m jaxse.rvae_convert IN.pt -o DIR`` writes one) or a reference ``.pt``
state_dict (default: ``jaxse/assets/rvae``). ``--config.FIELD=VALUE`` sets a field of the chosen method's
settings: :class:`jaxse.diffusion.udiffse.PosteriorConfig` (e.g. ``--config.num_steps=10 --config.num_em=2``) or
:class:`jaxse.rvae.posterior.RVAEPosteriorConfig` (e.g. ``--config.num_em=50 --config.ld_chains=5``). Results are
deterministic for a given ``--seed`` (noise keys come from the seed and each file's relative path).

A checkpoint directory may carry ``sampler_settings.json`` (:func:`jaxse.enhance.checkpoint_settings`): the
settings tuned for that prior on validation mixtures (the shipped prior's: ``lmbd`` 2.5). They replace the
reference defaults of the fields not given as ``--config.FIELD``; the line that starts the run names them.
"""

from __future__ import annotations

import sys

from absl import app, flags, logging
from ml_collections import ConfigDict, config_flags

from jaxse import registry
from jaxse.cli import flag_value
from jaxse.errors import one_line
from jaxse.enhance import METHODS


def _method_from_argv(argv) -> str | None:
    """The value of ``--method`` on the command line (last one wins), before absl parses it."""
    return flag_value(argv, "method")


def _config_class(method: str | None):
    """The settings class of ``method`` (that of the default method ``udiffse`` when unknown or absent)."""
    return registry.method(method if method in METHODS else "udiffse").settings_class


def _explicit_config_fields(argv) -> list[str]:
    """The FIELDs given as ``--config.FIELD`` on the command line, in order (these win over a checkpoint's
    settings)."""
    names = []
    for a in argv[1:]:
        if a == "--":
            break
        if a.startswith("--config."):
            names.append(a[len("--config."):].split("=", 1)[0])
    return names


def _check_config_overrides(argv) -> None:
    """One clear line (instead of a traceback) for ``--config.FIELD`` with an unknown FIELD."""
    cls = _config_class(_method_from_argv(argv))
    fields = set(cls().to_dict())
    for name in _explicit_config_fields(argv):
        if name not in fields:
            sys.stderr.write(f"enhance.py: error: unknown --config.{name} for {cls.__name__} "
                             f"(fields: {', '.join(sorted(fields))})\n")
            sys.exit(2)


# (DEFINE_config_dict reads the --config.* overrides from sys.argv right away, so check them first, and give it
# the fields of the method's settings class.)
_CONFIG_CLASS = _config_class(None)
if __name__ == "__main__":
    _check_config_overrides(sys.argv)
    _CONFIG_CLASS = _config_class(_method_from_argv(sys.argv))

FLAGS = flags.FLAGS
flags.DEFINE_string("output", None, "Output directory (mirrors the input tree).", short_name="o")
flags.DEFINE_enum("method", None, list(METHODS), "Enhancement method (default: --config.method, i.e. udiffse).")
flags.DEFINE_string("checkpoint", None,
                    "Diffusion: train.py workdir/checkpoint or reference .ckpt/.npz (default: the shipped prior). "
                    "RVAE: directory with rvae.json or reference .pt (default: jaxse/assets/rvae).")
flags.DEFINE_integer("seed", 0, "Base seed of the sampler noise.")
flags.DEFINE_integer("batch-size", 4, "Utterances (or chunks) enhanced together per compiled call.", lower_bound=1)
flags.DEFINE_integer("chunk-frames", 1024, "Longest segment in STFT frames (a multiple of 64); longer files are "
                     "processed in 50%-overlapping chunks of this size (1024 frames: 8.2 s for the diffusion "
                     "priors, hop 128; 16.4 s for the RVAE, hop 256).", lower_bound=64)
flags.register_validator("chunk-frames", lambda v: v is None or v % 64 == 0, message="must be a multiple of 64")
flags.DEFINE_enum("dtype", None, ["float32", "bfloat16"],
                  "Compute dtype of the network's convolutions and attention (bfloat16: for GPU/TPU; the diffusion "
                  "and SGMSE+ networks). Default: float32.")
flags.DEFINE_bool("row-by-row", None, "Run each device's rows one after another instead of vectorised: outputs "
                  "bit-identical whatever the batching (default: on CPU only, where it costs nothing).")
# (The JAXSE_* environment variables are read in main, where a bad value is a usage error.)
flags.DEFINE_string("coordinator_address", None, "Multi-process run: host:port of process 0 (jax.distributed; "
                    "default: $JAXSE_COORDINATOR_ADDRESS).")
flags.DEFINE_integer("num_processes", None, "Multi-process run: number of processes (each enhances its share of "
                     "the files; default: $JAXSE_NUM_PROCESSES).")
flags.DEFINE_integer("process_id", None, "Multi-process run: this process's index in [0, num_processes) "
                     "(default: $JAXSE_PROCESS_ID).")
flags.DEFINE_float("coordinator_timeout", None, "Multi-process run with a coordinator: seconds to wait for the run "
                   "to form before giving up with an error (default: $JAXSE_COORDINATOR_TIMEOUT, else 300).")
flags.DEFINE_bool("distributed", False, "Multi-process run: jax.distributed.initialize() with cluster "
                  "auto-detection (SLURM, Open MPI, TPU pods).")
flags.DEFINE_string("visual", None, "Audio-visual methods (av-udiffse, av-udiffse+): folder of the inputs' visual "
                    "features, one .npy array (frames, dim) at 25 fps per input at the same relative path.")
flags.DEFINE_bool("overwrite", False, "Redo files whose output already exists.")
flags.DEFINE_string("log", None, "CSV log file (default OUTDIR/enhance_log.csv; appended).")
flags.DEFINE_bool("progress", True, "Show a progress bar on stderr.")
try:
    config_flags.DEFINE_config_dict("config", ConfigDict(_CONFIG_CLASS().to_dict()),
                                    f"Settings of the method ({_CONFIG_CLASS.__name__} fields).", lock_config=True)
except Exception as exc:  # a malformed --config.* value (parsed here, at definition time)
    if __name__ != "__main__":
        raise
    sys.stderr.write(f"enhance.py: error: bad --config override ({one_line(exc, None)})\n")
    sys.exit(2)


def _usage_error(message) -> int:
    """One line on stderr; the exit code of a usage error (2)."""
    sys.stderr.write(f"enhance.py: error: {one_line(message, None)}\n")
    return 2


def _parse_flags(argv):
    """absl's flag parsing (``app.run``'s ``flags_parser``), with a bad flag (unknown, malformed, out of range,
    e.g. ``--method nosuch``, ``--config.lmbd=abc``, ``--batch-size 0``) as a usage error: one line and exit
    code 2. (absl's own parser prints two lines and exits with 1, the code of a failed file.)"""
    try:
        return FLAGS(argv)
    except flags.Error as exc:
        sys.exit(_usage_error(exc))


def main(argv):
    try:
        return _main(argv)
    except KeyboardInterrupt:  # before the output folder is locked (the model loading, jax starting): no file done
        sys.stderr.write("\nenhance.py: stopped; 0 files done, rerun the same command to finish\n")
        return 130


def _main(argv):
    if len(argv) != 2:
        return _usage_error("expected exactly one INPUT (a file or a directory)")
    if not FLAGS.output:
        return _usage_error("-o OUTDIR is required")
    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.ERROR)  # orbax logs every restore (and its read-only options); -v 0 shows them
    from pathlib import Path

    from jaxse import enhance

    fields = FLAGS.config.to_dict()
    method = FLAGS.method or fields.get("method") or "udiffse"
    try:
        if enhance.config_class(method) is not _CONFIG_CLASS:  # e.g. --config.method=rvae-ldem
            raise ValueError(f"choose {method} with --method {method} (the --config.* fields are those of the "
                             "--method's settings)")
        explicit = _explicit_config_fields(sys.argv)
        tuned = {k: v for k, v in enhance.checkpoint_settings(method, FLAGS.checkpoint).items() if k not in explicit}
        cfg = enhance.make_config(method, **{**fields, **tuned})
    except (TypeError, ValueError, enhance.CheckpointError) as exc:
        return _usage_error(exc)
    if not Path(argv[1]).exists():
        return _usage_error(f"{argv[1]}: no such file or directory")
    audio_visual = registry.method(method).conditioning is not None
    if audio_visual and not FLAGS.visual:
        return _usage_error(f"--method {method} needs --visual FEATURE_DIR (the inputs' visual features: .npy files "
                            "at the inputs' relative paths)")
    if FLAGS.visual and not audio_visual:
        return _usage_error(f"--visual is for the audio-visual methods "
                            f"({', '.join(m for m in METHODS if registry.method(m).conditioning)}), not {method}")
    if FLAGS.visual and not Path(FLAGS.visual).is_dir():
        return _usage_error(f"--visual {FLAGS.visual}: not a directory")
    try:  # before the model loads, and creating nothing: -o and --log writable (and not full), the inputs not
        # overwritten, some audio to enhance
        enhance.check_output_paths(argv[1], FLAGS.output, FLAGS.log)
        enhance.check_inputs(argv[1], FLAGS.output)
    except ValueError as exc:
        return _usage_error(exc)
    from jaxse import multihost, parallel

    try:  # before any JAX computation: jax.distributed must be joined first
        settings = parallel.distributed_settings(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id,
                                                 FLAGS.coordinator_timeout)  # flags, else the JAXSE_* variables
        share = multihost.resolve_share(**settings, auto=FLAGS.distributed, prog="enhance.py")
    except ValueError as exc:
        return _usage_error(exc)
    try:  # one run per output folder (per process share): a second one is refused before its model loads
        lock = enhance.OutputLock(FLAGS.output, share).acquire()
    except (enhance.OutputLocked, OSError) as exc:
        return _usage_error(exc)
    try:
        return _enhance(argv, method, cfg, tuned, share, lock, enhance)
    except KeyboardInterrupt as exc:  # Ctrl-C: what was written is complete and kept; a rerun resumes
        summary = getattr(exc, "summary", None)
        sys.stderr.write(f"\nenhance.py: stopped; {summary.done if summary else 0} files done, rerun the same "
                         "command to finish\n")
        return 130
    finally:  # the lock files go; a folder the lock made is removed again if nothing was written in it (a
        # checkpoint error, Ctrl-C while the model loads)
        lock.release(remove_created=True)


def _enhance(argv, method, cfg, tuned, share, lock, enhance) -> int:
    """Load the model and enhance the files (the lock on the output folder held); the exit code."""
    from pathlib import Path

    try:
        backend = enhance.load_backend(method, FLAGS.checkpoint, cfg, FLAGS.dtype)
        enhancer = enhance.Enhancer(backend, batch_size=FLAGS["batch-size"].value,
                                    chunk_frames=FLAGS["chunk-frames"].value, seed=FLAGS.seed,
                                    row_by_row=FLAGS["row-by-row"].value)
    except (enhance.CheckpointError, ValueError) as exc:
        return _usage_error(exc)
    where = "" if share.single else f" ({share}, its share of the files)"
    sys.stderr.write(f"enhance.py: {backend.describe()}, {enhancer.num_devices} device(s){where}, frame buckets "
                     f"{list(enhancer.buckets)}\n")
    if tuned:
        sys.stderr.write(f"enhance.py: settings of {enhance.settings_path(method, FLAGS.checkpoint)} (tuned for this "
                         f"prior; --config.FIELD overrides): {', '.join(f'{k}={v}' for k, v in tuned.items())}\n")
    conditioning = None
    if registry.method(method).conditioning is not None:  # each input's features, read by the method's own loader
        visual_root = Path(FLAGS.visual)
        conditioning = lambda rel: backend.load_conditioning(visual_root, rel)  # noqa: E731
    summary = enhance.enhance_files(argv[1], FLAGS.output, enhancer, overwrite=FLAGS.overwrite, log_path=FLAGS.log,
                                    progress=FLAGS.progress, share=share, conditioning=conditioning, lock=lock)
    log_path = FLAGS.log or str(Path(FLAGS.output) / enhance.LOG_NAME)
    sys.stderr.write(summary.line(log_path) + "\n")
    if summary.done or summary.skipped:  # where the results are (stdout: the one line a script may read)
        source = Path(argv[1])
        where = Path(FLAGS.output) / source.name if source.is_file() else Path(FLAGS.output)
        print(f"enhanced audio: {where}" if source.is_file() else f"enhanced audio in: {where}")
    return summary.exit_code


if __name__ == "__main__":
    app.run(main, flags_parser=_parse_flags)
