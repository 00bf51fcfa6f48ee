"""Compile time and steady-state speed of the jitted training step for a config.

    python benchmarks/train_step.py --config configs/cpu_small.py [--config.training.batch_size=1 ...]
    python benchmarks/train_step.py --config configs/udiffse_plus_28m.py --config.training.batch_size=1 --steps 3

Prints trace/lower time, XLA compile time, the first call and the median of ``--steps`` further calls
(each ended with ``block_until_ready``), on random waveform crops (no data files needed).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from jaxse.evaluation.benchmark import time_train_step  # noqa: E402

config_flags.DEFINE_config_file("config", None, "Training config file.", lock_config=True)
flags.DEFINE_integer("steps", 5, "Timed steps after the first call.")
flags.DEFINE_string("json", None, "Also write the numbers to this JSON file.")
FLAGS = flags.FLAGS


def main(_):
    out = time_train_step(FLAGS.config, FLAGS.steps)
    print(json.dumps(out, indent=1))
    if FLAGS.json:
        Path(FLAGS.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    flags.mark_flags_as_required(["config"])
    app.run(main)
