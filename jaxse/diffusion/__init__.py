"""The diffusion prior: OUVE SDE, NCSN++/NCSN++M score networks, predictor-corrector sampling, UDiffSE/UDiffSE+ posterior sampling, import of reference checkpoints."""
