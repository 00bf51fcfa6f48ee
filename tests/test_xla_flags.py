"""The XLA:CPU flags jaxse chooses per instruction-set level (jaxse.xla_flags): the level read from the CPU and
capped by --xla_cpu_max_isa, the user's own XLA_FLAGS winning flag by flag, JAXSE_XLA_AUTO=0, and (in fresh
processes, since XLA reads its flags once) that the chosen set is what the backend starts with."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from jaxse import xla_flags

REPO = Path(__file__).resolve().parents[1]
AVX512 = "processor\t: 0\nflags\t\t: fpu sse4_2 avx avx2 fma avx512f avx512bw\n"
AVX2 = "processor\t: 0\nflags\t\t: fpu sse4_2 avx avx2 fma\n"
YNN_OFF = "--xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE"


def test_isa_level_from_cpu_flags_and_the_max_isa_cap():
    assert xla_flags.isa_level("", AVX512) == "AVX512"
    assert xla_flags.isa_level("", AVX2) == "AVX2"
    assert xla_flags.isa_level("", "flags\t: fpu sse4_2 avx avx2\n") == "AVX"  # AVX2 without FMA
    assert xla_flags.isa_level("", "Processor\t: AArch64\n") == "unknown"  # no x86 flags line
    assert xla_flags.isa_level("--xla_cpu_max_isa=AVX2", AVX512) == "AVX2"
    assert xla_flags.isa_level("--xla_cpu_max_isa=avx512", AVX512) == "AVX512"
    assert xla_flags.isa_level("--xla_cpu_max_isa=AVX512", AVX2) == "AVX2"  # a cap never raises the level
    assert xla_flags.isa_level("--xla_cpu_max_isa=SSE4_2 --x=1", AVX2) == "SSE4_2"


def test_chosen_flags_leave_a_flag_the_user_set_alone():
    assert xla_flags.chosen_flags("", "AVX2") == [YNN_OFF]
    assert xla_flags.chosen_flags("--xla_cpu_max_isa=AVX2", "AVX2") == [YNN_OFF]
    assert xla_flags.chosen_flags(
        "--xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_REDUCE", "AVX2") == []
    assert xla_flags.chosen_flags("", "AVX512") == []
    assert xla_flags.chosen_flags("", "unknown") == []


def test_apply_writes_only_the_environment_it_is_given(monkeypatch):
    monkeypatch.setattr(xla_flags, "isa_level", lambda flags=None, cpuinfo=None: "AVX2")
    monkeypatch.setattr(xla_flags, "_backend_started", lambda: False)
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    rec = xla_flags.apply(env)
    assert rec["added"] == [YNN_OFF] and env["XLA_FLAGS"] == f"--xla_force_host_platform_device_count=2 {YNN_OFF}"
    env = {"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_DOT"}
    assert xla_flags.apply(env)["added"] == [] and env["XLA_FLAGS"].endswith("LIBRARY_FUSION_TYPE_DOT")
    env = {"JAXSE_XLA_AUTO": "0"}
    assert xla_flags.apply(env) == {"isa": "AVX2", "added": [], "reason": "JAXSE_XLA_AUTO=0"} and "XLA_FLAGS" not in env
    monkeypatch.setattr(xla_flags, "_backend_started", lambda: True)
    env = {}
    assert xla_flags.apply(env)["added"] == [] and "XLA_FLAGS" not in env


def _child(env_extra: dict) -> dict:
    """Import jaxse in a fresh process, start the backend, and report what XLA was given."""
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAXSE_XLA_AUTO")}
    env.update(env_extra, JAX_PLATFORMS="cpu")
    code = ("import json, os, jaxse, jax, jax.numpy as jnp\n"
            "x = jnp.ones((1, 64, 64, 32)); k = jnp.ones((3, 3, 32, 32))\n"
            "conv = lambda x, k: jax.lax.conv_general_dilated(x, k, (1, 1), 'SAME', "
            "dimension_numbers=('NHWC', 'HWIO', 'NHWC'))\n"
            "hlo = jax.jit(conv).lower(x, k).compile().as_text()\n"
            "print(json.dumps({'flags': os.environ.get('XLA_FLAGS', ''), 'applied': jaxse.xla_flags.applied(), "
            "'ynn': '__ynn_fusion' in hlo}))")
    p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=REPO, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(xla_flags.cpu_flags() is None or "avx2" not in xla_flags.cpu_flags(),
                    reason="needs an x86 CPU with AVX2 (the AVX2 choice is tested under a --xla_cpu_max_isa cap)")
def test_a_fresh_process_gets_the_chosen_set_and_a_users_xla_flags_win():
    capped = _child({"XLA_FLAGS": "--xla_cpu_max_isa=AVX2"})  # an AVX2 machine, as far as XLA is concerned
    assert capped["applied"]["isa"] == "AVX2" and capped["applied"]["added"] == [YNN_OFF]
    assert capped["flags"] == f"--xla_cpu_max_isa=AVX2 {YNN_OFF}"
    assert not capped["ynn"]  # XLA got the set: the convolution is not handed to YNNPACK
    own = "--xla_cpu_max_isa=AVX2 --xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"
    mine = _child({"XLA_FLAGS": own})
    assert mine["flags"] == own and mine["applied"]["added"] == []
    off = _child({"XLA_FLAGS": "--xla_cpu_max_isa=AVX2", "JAXSE_XLA_AUTO": "0"})
    assert off["flags"] == "--xla_cpu_max_isa=AVX2" and off["applied"]["reason"] == "JAXSE_XLA_AUTO=0"
    assert off["ynn"]  # XLA:CPU's default: YNNPACK takes the convolution
