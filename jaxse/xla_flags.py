"""XLA:CPU flags chosen from the CPU's instruction-set level, set before the backend starts.

XLA reads ``XLA_FLAGS`` once, when its first backend is created, so a choice made per CPU has to be in the
environment before then: :func:`apply` runs when ``jaxse`` is imported. It

* finds the instruction-set level the generated code may use (:func:`isa_level`): the CPU's own (``avx512f``,
  ``avx2`` + ``fma``, ``avx`` in ``/proc/cpuinfo``), lowered by a ``--xla_cpu_max_isa=`` cap in ``XLA_FLAGS``
  (the way to stand in for an AVX2 machine on an AVX-512 one);
* adds the flags of :data:`FLAGS_BY_ISA` for that level to ``XLA_FLAGS``, each only when the user's own
  ``XLA_FLAGS`` does not name that flag already (a user's setting always wins) — and nothing at all when
  ``JAXSE_XLA_AUTO=0``, or when a JAX backend is already running (too late: XLA would not see them);
* logs what it did once, on the ``jaxse`` logger (:func:`applied` returns it too, for benchmark records).

The table holds only measured choices. AVX2 (no AVX-512): convolutions are not handed to YNNPACK (XLA:CPU
gives it convolutions, matrix products and reductions by default) but run by XLA's own kernels. On an
AVX2-only AMD EPYC (2 cores) the 28M NCSN++M forward took 4.82 s with every YNNPACK fusion off instead of
6.17 s (issue 27), and convolutions are ~80 % of that forward; matrix products and reductions stay with
YNNPACK, because XLA's own matrix product rounds the RVAE's saturated LSTM gates (inputs up to 1e5) 2× further
from the reference than its golden-parity test allows. On AVX-512 machines the defaults are kept (no flag set
measured better there: README, "Speed on AVX2 and AVX-512 CPUs").
"""

from __future__ import annotations

import logging
import os
import re
import sys
from pathlib import Path

logger = logging.getLogger("jaxse")

# Instruction-set levels, lowest first, with the /proc/cpuinfo flags each needs and the name XLA's
# --xla_cpu_max_isa uses for it.
_LEVELS = (("SSE4_2", ("sse4_2",)), ("AVX", ("avx",)), ("AVX2", ("avx2", "fma")), ("AVX512", ("avx512f",)))
# YNNPACK's fusion types without LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION (XLA's default set, jax 0.10.2, is
# exactly these three: the outputs of that setting and of the defaults are bit-identical here).
_YNN_ALL_BUT_CONVOLUTIONS = "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE"
FLAGS_BY_ISA: dict[str, tuple[str, ...]] = {
    "AVX2": (f"--xla_cpu_experimental_ynn_fusion_type={_YNN_ALL_BUT_CONVOLUTIONS}",),
}
_APPLIED: dict = {}


def cpu_flags(cpuinfo: str | None = None) -> frozenset[str] | None:
    """The CPU's feature flags from ``/proc/cpuinfo`` (or the text given); ``None`` where unknown (not Linux)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return None
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return None


def _flag_names(xla_flags: str) -> set[str]:
    return {m.group(1) for m in re.finditer(r"(--[\w.]+)", xla_flags or "")}


def isa_level(xla_flags: str | None = None, cpuinfo: str | None = None) -> str:
    """``"AVX512"``, ``"AVX2"``, ``"AVX"``, ``"SSE4_2"`` (x86 CPUs), or ``"unknown"`` (other CPUs, no cpuinfo):
    the highest level the CPU has, capped by ``--xla_cpu_max_isa=`` in ``xla_flags`` (default: ``$XLA_FLAGS``).
    """
    flags = cpu_flags(cpuinfo)
    if not flags:
        return "unknown"
    level = None
    for name, needs in _LEVELS:
        if all(f in flags for f in needs):
            level = name
    if level is None:
        return "unknown"
    xla_flags = os.environ.get("XLA_FLAGS", "") if xla_flags is None else xla_flags
    cap = re.findall(r"--xla_cpu_max_isa=(\w+)", xla_flags)
    if cap:
        order = [n for n, _ in _LEVELS]
        want = cap[-1].upper()
        want = "AVX512" if want.startswith("AVX512") else want
        if want in order and order.index(want) < order.index(level):
            level = want
    return level


def chosen_flags(xla_flags: str, level: str) -> list[str]:
    """The flags of ``level`` that ``xla_flags`` (the user's) does not name already."""
    user = _flag_names(xla_flags)
    return [f for f in FLAGS_BY_ISA.get(level, ()) if f.split("=", 1)[0] not in user]


def _backend_started() -> bool:
    xb = sys.modules.get("jax._src.xla_bridge")
    return bool(getattr(xb, "_backends", None))


def apply(environ=None) -> dict:
    """Add the flags chosen for this CPU to ``environ["XLA_FLAGS"]`` (default ``os.environ``); returns a record
    ``{"isa": ..., "added": [...], "reason": ...}`` (also kept for :func:`applied`). Idempotent."""
    if environ is None and _APPLIED:
        return dict(_APPLIED)
    env = os.environ if environ is None else environ
    user = env.get("XLA_FLAGS", "")
    level = isa_level(user)
    record = {"isa": level, "added": [], "reason": ""}
    if env.get("JAXSE_XLA_AUTO", "1").strip().lower() in ("0", "false", "no", "off"):
        record["reason"] = "JAXSE_XLA_AUTO=0"
    elif _backend_started():
        record["reason"] = "a JAX backend was already running"
    else:
        add = chosen_flags(user, level)
        if add:
            env["XLA_FLAGS"] = " ".join([user.strip(), *add]).strip()
            record["added"] = add
            record["reason"] = f"chosen for {level}"
        else:
            record["reason"] = "nothing to add" if not FLAGS_BY_ISA.get(level) else "set by the user's XLA_FLAGS"
    if environ is None:
        if record["added"] and not _APPLIED:
            logger.info("XLA:CPU flags for this %s CPU added to XLA_FLAGS: %s (JAXSE_XLA_AUTO=0 turns this off)",
                        level, " ".join(record["added"]))
        _APPLIED.clear()
        _APPLIED.update(record)
    return record


def applied() -> dict:
    """What :func:`apply` did in this process (empty before it ran)."""
    return dict(_APPLIED)
