"""Experiment configs (ml_collections ConfigDicts), one file per experiment, all built on ``default``."""
