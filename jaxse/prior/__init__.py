"""The ``ncsnpp`` family: the clean-speech diffusion prior of UDiffSE / UDiffSE+ (its family object, method
loader and reference-layout detector); the networks, SDE, samplers and posteriors are the shared score-model
core (:mod:`jaxse.diffusion`)."""
