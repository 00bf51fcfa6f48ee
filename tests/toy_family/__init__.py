"""A toy model family that lives outside the package (tests/test_toy_family.py registers it): a per-bin
log-power prior of clean speech and a Wiener-gain enhancement method built on it."""
