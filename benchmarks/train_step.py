"""Compile time and steady-state speed of the jitted training step for a config.

    python benchmarks/train_step.py --config configs/cpu_small.py [--config.training.batch_size=1 ...]
    python benchmarks/train_step.py --config configs/udiffse_plus_28m.py --config.training.batch_size=1 --steps 3

Prints trace/lower time, XLA compile time, the first call and the median of ``--steps`` further calls
(each ended with ``block_until_ready``), on random waveform crops (no data files needed).
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from jaxse.pytree import count_params  # noqa: E402
from jaxse import registry, training  # noqa: E402

config_flags.DEFINE_config_file("config", None, "Training config file.", lock_config=True)
flags.DEFINE_integer("steps", 5, "Timed steps after the first call.")
flags.DEFINE_string("json", None, "Also write the numbers to this JSON file.")
FLAGS = flags.FLAGS


def main(_):
    config = FLAGS.config
    model = training.model_from_config(config)
    spec = training.spec_from_config(config)
    tx = training.optimizer_from_config(config)
    mesh = training.make_mesh()
    state = training.create_train_state(model, tx, 0, spec.num_bins, mesh)
    batch = int(config.training.batch_size)
    length = spec.crop_length(int(config.data.crop_frames))
    rng = np.random.default_rng(0)
    family = registry.family_of_model(model)
    rows = {name: rng.uniform(-1, 1, (batch, length)).astype(np.float32) for name in family.batch_fields}
    waves = training.global_batch(rows, mesh)
    step = training.make_train_step(model, spec, tx, float(config.training.ema_decay), mesh,
                                    objective=family.objective(config, 1))

    t0 = time.perf_counter()
    lowered = step.lower(state, waves)
    t1 = time.perf_counter()
    compiled = lowered.compile()
    t2 = time.perf_counter()
    state, metrics = compiled(state, waves)
    jax.block_until_ready(metrics)
    t3 = time.perf_counter()
    times = []
    for _ in range(FLAGS.steps):
        s = time.perf_counter()
        state, metrics = compiled(state, waves)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - s)
    steady = statistics.median(times)
    out = {
        "params": count_params(state.params),
        "batch": batch,
        "crop_frames": int(config.data.crop_frames),
        "device": str(jax.devices()[0].device_kind),
        "num_devices": jax.device_count(),
        "jax": jax.__version__,
        "lower_s": round(t1 - t0, 3),
        "compile_s": round(t2 - t1, 3),
        "first_call_s": round(t3 - t2, 3),
        "step_s_median": round(steady, 4),
        "steps_per_s": round(1.0 / steady, 3),
    }
    print(json.dumps(out, indent=1))
    if FLAGS.json:
        Path(FLAGS.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    flags.mark_flags_as_required(["config"])
    app.run(main)
