"""Enhancement methods by name: their settings (the classes, a checkpoint's tuned ``sampler_settings.json``) and
their backends, all reached through :mod:`jaxse.registry` (the engine imports no family).

A checkpoint directory may carry :data:`SETTINGS_FILE`, ``{"methods": {METHOD: {FIELD: VALUE, ...}}}``: the
settings tuned for that checkpoint (e.g. the shipped prior's ``lmbd`` 2.5), which replace the reference defaults
of the fields not given explicitly.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from jaxse import registry
from jaxse.core.backend import CheckpointError, MethodBackend
from jaxse.errors import UnknownFieldError, one_line

# enhance.py --method: every method of the registry, in the order the help lists them
METHODS = registry.METHODS
SETTINGS_FILE = "sampler_settings.json"


def config_class(method: str):
    """The settings class of a method of :data:`METHODS` (``ValueError`` for an unknown one)."""
    return registry.method(method).settings_class


def make_config(method: str, /, **fields):
    """The settings of ``method`` (``"udiffse+"``, ``"rvae-mhem"``, ...) with ``fields`` overridden; the method
    field is the method's (``"mhem"`` for ``"rvae-mhem"``), whatever ``fields`` says. A field the settings class
    does not have raises :class:`jaxse.errors.UnknownFieldError` (a ``TypeError``), a bad value
    :class:`jaxse.errors.SettingsError` (a ``ValueError``); both are :class:`jaxse.JaxseError`."""
    spec = registry.method(method)
    known = {f.name for f in dataclasses.fields(spec.settings_class)}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise UnknownFieldError(f"unknown field(s) {', '.join(unknown)} for {spec.settings_class.__name__} "
                                f"(fields: {', '.join(sorted(known - {'method'}))})")
    return spec.make_settings(**fields)


def settings_path(method: str, checkpoint=None) -> Path | None:
    """The :data:`SETTINGS_FILE` that goes with ``checkpoint`` (default: the shipped checkpoint of
    ``method``): the file in the checkpoint directory, or ``None`` when there is none."""
    if checkpoint is None:
        root = registry.method(method).default_checkpoint_path()
    else:
        root = Path(checkpoint)
    path = root / SETTINGS_FILE
    return path if root.is_dir() and path.is_file() else None


def checkpoint_settings(method: str, checkpoint=None) -> dict:
    """The settings a checkpoint recommends for ``method``: the ``"methods"[method]`` entry of its
    :data:`SETTINGS_FILE` (e.g. ``{"lmbd": 2.5}``, tuned for that prior on validation mixtures), ``{}`` when it
    has none. Fields are checked against the method's settings class; a bad file raises
    :class:`CheckpointError` (one line)."""
    path = settings_path(method, checkpoint)
    if path is None:
        return {}
    try:
        entry = json.loads(path.read_text())["methods"].get(method, {})
        if not isinstance(entry, dict):
            raise ValueError(f"the entry of {method} is not a JSON object")
        known = {f.name for f in dataclasses.fields(config_class(method))} - {"method"}
        unknown = sorted(set(entry) - known)
        if unknown:
            raise ValueError(f"unknown field(s) {', '.join(unknown)} for {method}")
        make_config(method, **entry)  # values valid for the settings class
    except Exception as exc:
        raise CheckpointError(f"{path}: bad sampler settings ({one_line(exc)})") from exc
    return dict(entry)


def load_backend(method: str = "udiffse", checkpoint=None, cfg=None, dtype: str | None = None) -> MethodBackend:
    """The backend of ``method`` (:data:`METHODS`) with its checkpoint (default: the shipped one) and settings
    (default: ``make_config(method, **checkpoint_settings(method, checkpoint))``, i.e. the reference defaults
    with what the checkpoint's :data:`SETTINGS_FILE` recommends). Raises :class:`CheckpointError` (one line)
    for a missing or unreadable checkpoint, ``ValueError`` for an unknown method or settings of the wrong
    class, or a ``dtype`` the method's network has no option for. ``dtype``: the network's compute dtype
    (``"bfloat16"`` for accelerators; ``None``: the checkpoint's, float32)."""
    spec = registry.method(method)
    cls = spec.settings_class
    cfg = make_config(method, **checkpoint_settings(method, checkpoint)) if cfg is None else cfg
    if not isinstance(cfg, cls):
        raise ValueError(f"{method} needs a {cls.__name__}, got a {type(cfg).__name__}")
    if cfg.method != spec.settings_method:
        raise ValueError(f"method {method!r} and cfg.method={cfg.method!r} disagree")
    backend = spec.load_backend(checkpoint, cfg)
    if dtype is not None:
        backend.set_compute_dtype(str(dtype))
    return backend
