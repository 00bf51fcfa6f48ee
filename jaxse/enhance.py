"""Enhance waveforms and audio files with any registered method: the public names of the engine
(:mod:`jaxse.engine`) in one module, which is also callable: ``jaxse.enhance(audio, ...)`` is
:func:`enhance_audio`.

Library side of ``enhance.py``:

* :class:`Enhancer` (:mod:`jaxse.engine.batch`) turns waveforms into enhanced waveforms with a
  :class:`MethodBackend`, batched, bucketed, chunked, compiled once per shape and sharded over the devices.
* :func:`load_backend` (:mod:`jaxse.engine.methods`) makes a method's backend from its name (:data:`METHODS`) and
  a checkpoint, with the settings :func:`make_config` / :func:`checkpoint_settings` give.
* :func:`enhance_files` (:mod:`jaxse.engine.files`) runs an :class:`Enhancer` over a file or a directory tree:
  mirrored output tree, resampling to the method's rate and back, atomic writes, resumable, a CSV log
  (:mod:`jaxse.engine.log`), bad files skipped.
* :func:`enhance_audio` (:mod:`jaxse.engine.api`) enhances one recording from Python.

Nothing inside the package imports this module: the engine's own modules import each other.
"""

from __future__ import annotations

import sys

from jaxse.core.backend import CheckpointError, Conditioning, MethodBackend
from jaxse.core.loading import checkpoint_path
from jaxse.engine.api import _ENGINES, enhance_audio  # noqa: F401  (_ENGINES: the engines kept between calls)
from jaxse.engine.batch import EnhanceResult, Enhancer
from jaxse.engine.files import (INPUT_EXTENSIONS, PEAK_FLOOR, PEAK_RATIO_LIMIT, RunSummary, check_inputs,
                                check_output_paths, enhance_files, list_inputs, peak_warning)
from jaxse.engine.outdir import OutputLock, OutputLocked
from jaxse.engine.log import LOG_FIELDS, LOG_NAME, read_log
from jaxse.engine.methods import (METHODS, SETTINGS_FILE, checkpoint_settings, config_class, load_backend,
                                  make_config, settings_path)

__all__ = [
    "CheckpointError", "Conditioning", "EnhanceResult", "Enhancer", "INPUT_EXTENSIONS", "LOG_FIELDS", "LOG_NAME",
    "METHODS", "MethodBackend", "OutputLock", "OutputLocked", "PEAK_FLOOR", "PEAK_RATIO_LIMIT", "RunSummary",
    "SETTINGS_FILE", "check_inputs", "check_output_paths",
    "checkpoint_path", "checkpoint_settings", "config_class", "enhance_audio", "enhance_files", "list_inputs",
    "load_backend", "make_config", "peak_warning", "read_log", "settings_path",
]


class _CallableModule(type(sys)):
    """Lets ``jaxse.enhance(audio, ...)`` call :func:`enhance_audio` while ``jaxse.enhance`` stays this module."""

    def __call__(self, *args, **kwargs):
        return enhance_audio(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
