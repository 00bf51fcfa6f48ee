"""Small helpers for the one-line errors every command gives."""

from __future__ import annotations


def one_line(exc: BaseException | str, limit: int | None = 300) -> str:
    """The text of ``exc`` on one line (runs of whitespace, newlines included, become one space), cut at
    ``limit`` characters (``None``: whole); an exception without a message gives its type's name."""
    text = " ".join(str(exc).split())
    if not text and isinstance(exc, BaseException):
        text = type(exc).__name__
    return text if limit is None else text[:limit]


class JaxseError(Exception):
    """The base of the errors the package raises for its users (one line each): catch ``jaxse.JaxseError`` to catch
    them all. Those caused by a bad value also subclass ``ValueError`` (:class:`SettingsError`,
    :class:`jaxse.audio.AudioError`, :class:`jaxse.registry.RegistryError`, ...), an unknown settings field
    ``TypeError`` (:class:`UnknownFieldError`), so ``except ValueError`` / ``except TypeError`` callers keep
    working."""


class SettingsError(JaxseError, ValueError):
    """A settings value out of its range (not finite, the wrong sign, not one of the choices)."""


class InputError(JaxseError, ValueError):
    """An input that cannot be enhanced as given (e.g. ``jaxse.enhance``'s array of the wrong shape, dtype or rate)."""


class UnknownFieldError(JaxseError, TypeError):
    """A settings field the settings class does not have (e.g. ``config={"nosuch": 1}``)."""


def check_numbers(obj, *, positive=(), nonnegative=(), finite=()) -> None:
    """Raise :class:`SettingsError` (one line naming the field and the rule) unless every field of ``obj`` named in
    ``positive`` is finite and > 0, in ``nonnegative`` finite and >= 0, in ``finite`` finite (NaN and +-inf are
    refused everywhere: ``--config.lmbd=nan``)."""
    import math

    for names, rule, ok in ((positive, "> 0", lambda v: v > 0), (nonnegative, ">= 0", lambda v: v >= 0),
                            (finite, "finite", lambda v: True)):
        for name in names:
            value = getattr(obj, name)
            try:
                number = float(value)
            except (TypeError, ValueError):
                raise SettingsError(f"{name} must be a number, got {value!r}") from None
            if not math.isfinite(number):
                raise SettingsError(f"{name} must be finite{'' if rule == 'finite' else ' and ' + rule}, "
                                    f"got {value!r}")
            if not ok(number):
                raise SettingsError(f"{name} must be {rule}, got {value!r}")
