"""Enhance noisy speech files with a diffusion prior (thin CLI around :mod:`jaxse.enhance`).

    python enhance.py INPUT -o OUTDIR [--method udiffse|udiffse+] [--checkpoint CKPT] [--seed N]
                      [--batch-size B] [--chunk-frames F] [--overwrite] [--log FILE] [--config.FIELD=VALUE ...]

INPUT is an audio file or a directory (searched recursively for anything libsndfile reads). OUTDIR mirrors
the input tree: same relative paths, same extensions, same sample rates and lengths (the prior runs at
16 kHz; files are resampled there and back; multi-channel files are mixed down to mono). Rerunning the
command skips files whose output exists (``--overwrite`` redoes them); outputs are written atomically, so
an interrupted run leaves no partial file. One CSV row per file (``file, duration_s, seconds, rtf, status,
message``) is appended to ``OUTDIR/enhance_log.csv`` (or ``--log``). Bad files are logged and skipped; the
exit code is 1 if any file failed, 2 for a usage or checkpoint error.

``--checkpoint``: a train.py workdir or checkpoint directory, or a reference ``.ckpt`` / ``.npz``; by
default the prior shipped in ``jaxse/assets/prior``. ``--config.FIELD=VALUE`` sets a field of
:class:`jaxse.udiffse.PosteriorConfig`, e.g. ``--config.num_steps=10 --config.num_em=2``. Results are
deterministic for a given ``--seed`` (noise keys come from the seed and each file's relative path).
"""

from __future__ import annotations

import sys

from absl import app, flags, logging
from ml_collections import ConfigDict, config_flags

from jaxse.udiffse import METHODS, PosteriorConfig


def _check_config_overrides(argv) -> None:
    """One clear line (instead of a traceback) for ``--config.FIELD`` with an unknown FIELD."""
    fields = set(PosteriorConfig().to_dict())
    for a in argv[1:]:
        if a.startswith("--config."):
            name = a[len("--config."):].split("=", 1)[0]
            if name not in fields:
                sys.stderr.write(f"enhance.py: error: unknown --config.{name} (fields: {', '.join(sorted(fields))})\n")
                sys.exit(2)


# (DEFINE_config_dict reads the --config.* overrides from sys.argv right away, so check them first.)
if __name__ == "__main__":
    _check_config_overrides(sys.argv)

FLAGS = flags.FLAGS
flags.DEFINE_string("output", None, "Output directory (mirrors the input tree).", short_name="o")
flags.DEFINE_enum("method", None, list(METHODS), "Posterior sampler (default: --config.method, i.e. udiffse).")
flags.DEFINE_string("checkpoint", None,
                    "train.py workdir/checkpoint or reference .ckpt/.npz (default: the shipped prior).")
flags.DEFINE_integer("seed", 0, "Base seed of the sampler noise.")
flags.DEFINE_integer("batch-size", 4, "Utterances (or chunks) enhanced together per compiled call.")
flags.DEFINE_integer("chunk-frames", 1024, "Longest segment in STFT frames (a multiple of 64); longer files are "
                     "processed in 50%-overlapping chunks of this size.")
flags.DEFINE_bool("overwrite", False, "Redo files whose output already exists.")
flags.DEFINE_string("log", None, "CSV log file (default OUTDIR/enhance_log.csv; appended).")
flags.DEFINE_bool("progress", True, "Show a progress bar on stderr.")
try:
    config_flags.DEFINE_config_dict("config", ConfigDict(PosteriorConfig().to_dict()),
                                    "Posterior sampler settings (PosteriorConfig fields).", lock_config=True)
except Exception as exc:  # a malformed --config.* value (parsed here, at definition time)
    if __name__ != "__main__":
        raise
    sys.stderr.write(f"enhance.py: error: bad --config override ({' '.join(str(exc).split())})\n")
    sys.exit(2)


def main(argv):
    if len(argv) != 2:
        raise app.UsageError("expected exactly one INPUT (a file or a directory)", exitcode=2)
    if not FLAGS.output:
        raise app.UsageError("-o OUTDIR is required", exitcode=2)
    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.ERROR)  # orbax logs every restore (and its read-only options); -v 0 shows them
    from pathlib import Path

    from jaxse import enhance

    fields = FLAGS.config.to_dict()
    if FLAGS.method:
        fields["method"] = FLAGS.method
    try:
        cfg = PosteriorConfig(**fields)
    except (TypeError, ValueError) as exc:
        sys.stderr.write(f"enhance.py: error: {exc}\n")
        return 2
    if not Path(argv[1]).exists():
        sys.stderr.write(f"enhance.py: error: {argv[1]}: no such file or directory\n")
        return 2
    try:
        model, variables, spec = enhance.load_prior(FLAGS.checkpoint)
        enhancer = enhance.Enhancer(model, variables, cfg, spec=spec, batch_size=FLAGS["batch-size"].value,
                                    chunk_frames=FLAGS["chunk-frames"].value, seed=FLAGS.seed)
    except (enhance.CheckpointError, ValueError) as exc:
        sys.stderr.write(f"enhance.py: error: {exc}\n")
        return 2
    sys.stderr.write(f"enhance.py: {cfg.method}, {cfg.nfe} network evaluations per segment (x{cfg.num_samples} "
                     f"samples), {enhancer.num_devices} device(s), frame buckets {list(enhancer.buckets)}\n")
    summary = enhance.enhance_files(argv[1], FLAGS.output, enhancer, overwrite=FLAGS.overwrite, log_path=FLAGS.log,
                                    progress=FLAGS.progress)
    log_path = FLAGS.log or str(Path(FLAGS.output) / enhance.LOG_NAME)
    sys.stderr.write(summary.line(log_path) + "\n")
    return summary.exit_code


if __name__ == "__main__":
    app.run(main)
