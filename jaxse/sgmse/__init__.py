"""SGMSE+ (a score model conditioned on the noisy speech), its weighted generative-supervised loss, and the
supervised (predictive) baseline: models, losses, paired and mixed training data, enhancement backends."""
