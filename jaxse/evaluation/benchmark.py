"""Inference benchmark: compile and run times of the prior sampler, the diffusion posterior samplers (UDiffSE,
UDiffSE+) and the RVAE EM algorithms (VEM, MHEM, MALAEM, LDEM).

    python -m jaxse.benchmark -o bench.json                      # tiny, 28M and 65M nets, all methods, all sweeps
    python -m jaxse.benchmark --quick -o /tmp/quick.json         # smoke test: shipped prior, 64 frames, 2 steps
    python -m jaxse.benchmark --networks 28m --methods udiffse+ --steps 2 --sweeps none -o b28.json
    python -m jaxse.benchmark --config configs/cpu_small.py --sweeps steps -o small.json
    python -m jaxse.benchmark --networks rvae --methods rvae --em-iters 2 --sweeps none -o rvae.json
    python -m jaxse.benchmark --rvae-checkpoint runs/rvae_published --sweeps none -o rvae_pub.json

Methods and networks come in two families. The diffusion methods (``prior``, ``udiffse``, ``udiffse+``) run on
the diffusion networks (score models: ``tiny``, ``nano``, ``cpu_small``, ``28m``, ``65m``, ``--config`` files),
the RVAE methods (``rvae-vem``, ``rvae-mhem``, ``rvae-malaem``, ``rvae-ldem``; ``rvae`` names all four) on the
RVAE networks (``rvae``: the RVAE shipped in ``jaxse/assets/rvae`` if there is one, else the published
non-causal architecture (1.03M parameters) with random weights, or the model of ``--rvae-checkpoint``;
``rvae-nano``: 16-unit LSTMs, random weights, for smoke tests). A pair of a method and a network of different
families is skipped (logged, and listed under ``skipped`` in the JSON). Without ``--methods`` every network
gets all the methods of its family.

For every (network, method) pair the sampler is compiled once as a whole (``jax.jit(f).trace(...)`` →
``.lower()`` → ``.compile()``, each timed) and then called: the first call, then ``--repeats`` calls whose
median is the steady-state time (every call ends with ``jax.block_until_ready``). The bare network
evaluation (the score model's ``score``) is compiled and timed on its own at the sampler's network shape
(rows = utterances × posterior samples, F bins, T frames), with its FLOP count from XLA's cost analysis
(``compiled.cost_analysis()``; null where the backend gives none) and the achieved GFLOP/s. From these:
time per network evaluation (steady ÷ NFE, NFE from the method's config) and the sampler overhead ratio
``steady ÷ (NFE × forward)`` (1.0 = the sampler costs nothing beyond its network calls).

Full-size networks are far too slow on a small CPU for the published recipes (30 steps × 2 NFE × 5 EM
iterations × 4 samples for UDiffSE), so networks with ≥ 5M parameters are measured at reduced settings by
default (2 steps, 1 EM iteration, 1 sample, 256 frames) and every result carries a ``full_recipe`` block: the
recipe's NFE and network rows, and ``seconds = NFE_full × measured per-NFE time × (rows_full·frames_full) /
(rows·frames)``, with ``extrapolated: true`` whenever the measured settings differ from the recipe (the
assumption, time ∝ NFE × rows × frames, is written beside it).

RVAE methods: one call of the method's posterior (its backend's
:meth:`~jaxse.core.backend.MethodBackend.posterior`, :func:`jaxse.rvae.posterior.rvae_posterior`) on one
utterance, a random (513, T) spectrogram (T frames of the RVAE's STFT, hop 256: 256 frames ≈ 4.1 s of audio),
at ``--em-iters`` EM iterations (default 2, far below the reference's 100) and otherwise the defaults of the
method's settings; timed as above. The bare network is the RVAE decoder (the model's ``decode``) on the
method's latent chains, ``(T, chains, 16)`` time-major; its FLOPs are counted from the layer sizes (matrix products; XLA's cost analysis counts the body of the LSTM's
``lax.scan`` once, its figure is kept as ``xla_flops``). The pass counts of
:meth:`~jaxse.rvae.posterior.RVAEPosteriorConfig.cost` (decoder and encoder, forward and backward) give the time model:
``units = forward passes + 2 × backward passes`` (encoder and decoder alike), affine in the EM count, so
``per_em_iter_s`` is the measured time per unit × the units one more EM iteration adds, and the
``full_recipe`` (the reference ``num_em`` at the measured length; the RVAE runs whole utterances) is
``seconds = steady × units_full / units`` with its real-time factor (``extrapolated: true`` unless the
measured EM count is the recipe's). ``overhead_ratio`` is ``steady ÷ (units × decoder forward)``.

Sweeps (on ``--sweep-networks``, default the first diffusion network; the sweeps cover the diffusion methods
only):

* ``steps``: prior PC sampler for each step count as a ``lax.scan`` (one compiled step body: compile time
  flat in N), as a Python loop over one jitted PC step (compiled once, N dispatches), and unrolled in
  one jit (``debug_loop``: compile time grows with N);
* ``batch``: utterances per call and parallel posterior samples (throughput per utterance);
* ``length``: utterance length in frames;
* ``cache``: JAX's persistent compilation cache; the same program is compiled in three fresh processes,
  once without the cache and twice with ``jax_compilation_cache_dir`` set to a temporary directory (and the
  minimum compile time / entry size thresholds at 0): a cold start that fills it, then a warm one.

Methods and networks are registries (:data:`METHODS`, :data:`NETWORKS`) built through :mod:`jaxse.registry`:
every enhancement method of the ``ncsnpp`` and ``rvae`` families is an entry (its settings from
:meth:`~jaxse.registry.Method.make_settings`, its program the per-row posterior of the backend that
:meth:`~jaxse.registry.Method.make_backend` makes for the network's model and weights), the prior sampler comes
from :meth:`~jaxse.registry.Family.prior_sampler`, and a network is a training config's model
(:meth:`~jaxse.registry.Family.model_from_config`) or a method's checkpoint (``load_backend``). The JSON
(``-o``) is rewritten atomically after every measurement, so a long run that is interrupted keeps what it measured
(``complete: false``). Progress goes to stderr, the tables to stdout. Nothing here assumes a CPU: the same
command runs on GPU/TPU.

The code is split by concern: :mod:`~jaxse.evaluation.bench_timing` (compile and run timing, the training
step, the environment, JSON), :mod:`~jaxse.evaluation.bench_methods` (settings, methods, time models),
:mod:`~jaxse.evaluation.bench_networks`, :mod:`~jaxse.evaluation.bench_runner` (the measurements and sweeps)
and :mod:`~jaxse.evaluation.bench_report` (the tables); this module is the command and re-exports them.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

from jaxse.evaluation.bench_methods import (BENCHMARKED_FAMILIES, DIFFUSION, FULL_FRAMES, METHOD_GROUPS,  # noqa: F401
                                            METHODS, RVAE, Method, RunSettings, audio_seconds, enhancement_method,
                                            expand_methods, full_recipe, methods_of, pass_units, posterior_method,
                                            prior_method, rvae_decoder_flops, rvae_full_recipe, rvae_method,
                                            rvae_time_model)
from jaxse.evaluation.bench_networks import (LARGE_PARAMS, NETWORKS, LoadedNetwork, NetworkSpec,  # noqa: F401
                                             config_network, load_network, rvae_network)
from jaxse.evaluation.bench_report import format_report  # noqa: F401
from jaxse.evaluation.bench_runner import (ALL_SWEEPS, CHILD_TAG, LARGE_DEFAULTS, QUICK_DEFAULTS,  # noqa: F401
                                           RVAE_DEFAULTS, RVAE_QUICK_DEFAULTS, SCHEMA, SMALL_DEFAULTS,
                                           STEP_VARIANTS, SWEEP_DEFAULTS, SWEEP_QUICK, Benchmark, Options,
                                           cache_child, run_cache_child)
from jaxse.evaluation.bench_timing import (REPO, clean, compile_timed, cost_analysis, environment,  # noqa: F401
                                           load_config_file, log, run_timed, time_program, time_train_step,
                                           write_json_atomic)

_cost = cost_analysis  # the names the accelerator check and older scripts import
_load_config_file = load_config_file

# --------------------------------------------------------------------------------------------- CLI


def _names(text: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.split(",") if t.strip())


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(t) for t in _names(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _positive(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m jaxse.benchmark",
        description="Compile and run times of the prior sampler, UDiffSE and UDiffSE+ (diffusion networks) and of "
                    "the RVAE EM algorithms VEM, MHEM, MALAEM and LDEM (RVAE networks); JSON + tables.")
    p.add_argument("-o", "--output", help="JSON file (written atomically, updated after every measurement)")
    p.add_argument("--config", action="append", default=[], metavar="FILE",
                   help="training config file (configs/*.py) whose model is benchmarked too, named after the "
                        "file (random weights); repeatable. Alone, it replaces the default --networks")
    p.add_argument("--networks", type=_names, default=None,
                   help=f"comma list from: {', '.join(NETWORKS)} (default tiny,28m,65m; --quick: tiny). rvae: the "
                        "shipped RVAE (jaxse/assets/rvae), else the published architecture with random weights")
    p.add_argument("--rvae-checkpoint", metavar="PATH",
                   help="weights of the rvae network: a directory with rvae.json (python -m jaxse.rvae_convert), a "
                        "reference .pt state_dict or a .npz. Adds rvae to --networks; alone, it replaces the default "
                        "--networks")
    p.add_argument("--methods", type=_names, default=None,
                   help=f"comma list from: {', '.join(METHODS)}, or 'rvae' (the four rvae-* methods), or 'none' "
                        "(sweeps only). Default: every method of each network's family (diffusion methods on "
                        "diffusion networks, rvae-* on RVAE networks); pairs of different families are skipped")
    p.add_argument("--steps", type=_positive,
                   help="reverse diffusion steps (default 30; 2 for nets >= 5M params; --quick 2)")
    p.add_argument("--em-iters", type=_positive,
                   help="EM iterations: UDiffSE (default 1; --quick 2) and the RVAE methods (default 2; the full "
                        "recipe, 100, is extrapolated from them)")
    p.add_argument("--samples", type=_positive, help="parallel posterior samples per utterance (default 1)")
    p.add_argument("--batch", type=_positive, help="utterances per call (prior: samples per call; default 1)")
    p.add_argument("--frames", type=_positive,
                   help="STFT frames per utterance (default 256; --quick 64). RVAE networks: frames of the RVAE STFT "
                        "(hop 256: 256 frames = 4.1 s; diffusion hop 128: 256 frames = 2.0 s)")
    p.add_argument("--repeats", type=_positive,
                   help="timed calls after the first (median; default 3, 2 for nets >= 5M params)")
    p.add_argument("--sweeps", default=",".join(ALL_SWEEPS),
                   help=f"comma list from {', '.join(ALL_SWEEPS)}, or 'none' / 'all' (default all)")
    p.add_argument("--sweep-networks", type=_names,
                   help="diffusion networks to sweep (default: the first diffusion network)")
    p.add_argument("--sweep-method", default="udiffse+",
                   help="diffusion method of the batch, length and cache sweeps (default udiffse+; the sweeps do "
                        "not cover the RVAE methods)")
    p.add_argument("--sweep-steps", type=_ints, help="step counts of the steps sweep (default 1,2,4,8)")
    p.add_argument("--sweep-batch", type=_ints, help="utterances per call in the batch sweep (default 1,2,4)")
    p.add_argument("--sweep-samples", type=_ints,
                   help="posterior samples per utterance in the batch sweep (default 1,2,4)")
    p.add_argument("--sweep-frames", type=_ints, help="frames of the length sweep (default 64,128,256,512)")
    p.add_argument("--step-variants", type=_names, default=STEP_VARIANTS,
                   help=f"steps-sweep loop forms from {', '.join(STEP_VARIANTS)} (default all)")
    p.add_argument("--quick", action="store_true",
                   help="tiny sizes for smoke tests: shipped prior, 64 frames, 2 steps, 2 EM iterations, 2 repeats; "
                        "sweeps over steps 1,2, batch 1,2, samples 1,2, frames 64,128")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                   help="compute dtype of the network's convolutions/attention (parameters stay float32; "
                        "default float32; the RVAE always runs in float32)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the random weights, inputs and sampler noise (default 0)")
    p.add_argument("--cache-child", help=argparse.SUPPRESS)
    return p


def options_from_args(args: argparse.Namespace) -> Options:
    sweeps = _names(args.sweeps.lower())
    if sweeps in (("none",), ()):
        sweeps = ()
    elif sweeps == ("all",):
        sweeps = ALL_SWEEPS
    bad = [s for s in sweeps if s not in ALL_SWEEPS]
    if bad:
        raise ValueError(f"unknown sweep(s) {bad} (known: {', '.join(ALL_SWEEPS)}, none, all)")
    bad = [v for v in args.step_variants if v not in STEP_VARIANTS]
    if bad:
        raise ValueError(f"unknown step variant(s) {bad} (known: {', '.join(STEP_VARIANTS)})")
    if args.sweep_method not in METHODS:
        raise ValueError(f"unknown --sweep-method {args.sweep_method!r} (known: {', '.join(methods_of(DIFFUSION))})")
    if args.methods is None:
        methods = None
    elif tuple(m.lower() for m in args.methods) == ("none",):
        methods = ()
    else:
        methods = expand_methods(args.methods)
    if args.networks is not None:
        networks = args.networks
    elif args.config or args.rvae_checkpoint:
        networks = ()
    else:
        networks = ("tiny",) if args.quick else ("tiny", "28m", "65m")
    return Options(
        networks=tuple(networks), configs=tuple(args.config), methods=methods,
        rvae_checkpoint=args.rvae_checkpoint, steps=args.steps,
        em_iters=args.em_iters, samples=args.samples, batch=args.batch, frames=args.frames, repeats=args.repeats,
        sweeps=tuple(sweeps), sweep_networks=args.sweep_networks, sweep_method=args.sweep_method,
        sweep_steps=args.sweep_steps, sweep_batch=args.sweep_batch, sweep_samples=args.sweep_samples,
        sweep_frames=args.sweep_frames, step_variants=tuple(args.step_variants), quick=bool(args.quick),
        dtype=args.dtype, seed=int(args.seed), output=args.output)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry; returns the exit code (0 ok, 1 a measurement failed, 2 usage error)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or a malformed option (argparse printed why)
        return exc.code if isinstance(exc.code, int) else 2
    if args.cache_child:
        print(CHILD_TAG + json.dumps(clean(cache_child(json.loads(args.cache_child)))), flush=True)
        return 0
    try:
        opts = options_from_args(args)
        bench = Benchmark(opts, argv)
    except (ValueError, FileNotFoundError) as exc:
        parser.print_usage(sys.stderr)
        sys.stderr.write(f"{parser.prog}: error: {exc}\n")
        return 2
    result = bench.run()
    print(format_report(result))
    if opts.output:
        log(f"wrote {opts.output}")
    return 1 if bench.errors else 0


if __name__ == "__main__":
    sys.exit(main())
