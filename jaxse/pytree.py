"""Small helpers on pytrees of arrays shared by every family."""

import jax


def count_params(tree) -> int:
    """Number of scalars in a pytree of arrays (the parameter count of a network's ``params``)."""
    return int(sum(x.size for x in jax.tree_util.tree_leaves(tree)))
