"""jaxse: diffusion-based unsupervised speech enhancement in JAX/Flax."""

__version__ = "0.1.0"
