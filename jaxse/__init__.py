"""jaxse: diffusion-based unsupervised speech enhancement in JAX/Flax.

``jaxse.enhance(audio_or_path, sample_rate=None, method="udiffse+", checkpoint=None, seed=0)`` enhances one
recording and returns it (:func:`jaxse.enhance.enhance_audio`; the module :mod:`jaxse.enhance`, the public face of
the engine :mod:`jaxse.engine`, is callable). Nothing heavy is imported until it is used.

``jaxse.JaxseError`` is the base of every error the package raises for its users (a bad value, an unreadable
file, an unusable checkpoint, an unknown method or settings field): ``except jaxse.JaxseError`` catches them all.
"""

from jaxse import xla_flags as _xla_flags
from jaxse.errors import JaxseError  # noqa: F401  (a plain module: imports nothing heavy)

# XLA:CPU flags chosen for this CPU's instruction-set level, before any JAX backend starts (jaxse.xla_flags).
_xla_flags.apply()

__version__ = "0.1.0"


def __getattr__(name):
    if name == "enhance":  # imported on first use (it imports jax)
        import importlib

        return importlib.import_module("jaxse.enhance")
    raise AttributeError(f"module 'jaxse' has no attribute {name!r}")
