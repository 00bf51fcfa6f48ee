"""The core layer: the contracts every model family implements and every tool consumes.

* :mod:`jaxse.core.backend`: what an enhancement method gives the engine (:class:`MethodBackend`, an optional
  :class:`Conditioning` input, :class:`CheckpointError`);
* :mod:`jaxse.core.train_state`: the training state and the EMA rule the families' train steps share;
* :mod:`jaxse.core.checkpoint`: orbax checkpoints (manager, metadata, save/restore, metadata reading), knowing
  no family;
* :mod:`jaxse.registry` (the families and methods by name, loaded lazily) sits on these, and
  :mod:`jaxse.core.loading` on the registry: loading a checkpoint as its family's model, the checkpoint a
  method runs on.

Nothing here imports a family or a tool (tested in ``tests/test_layers.py``).
"""
