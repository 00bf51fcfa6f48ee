"""jaxse: diffusion-based unsupervised speech enhancement in JAX/Flax.

``jaxse.enhance(audio_or_path, sample_rate=None, method="udiffse+", checkpoint=None, seed=0)`` enhances one
recording and returns it (:func:`jaxse.enhance.enhance_audio`; the module :mod:`jaxse.enhance`, the public face of
the engine :mod:`jaxse.engine`, is callable). Nothing heavy is imported until it is used.
"""

__version__ = "0.1.0"


def __getattr__(name):
    if name == "enhance":  # imported on first use (it imports jax)
        import importlib

        return importlib.import_module("jaxse.enhance")
    raise AttributeError(f"module 'jaxse' has no attribute {name!r}")
