"""Checks of the scalar arguments users pass: integers and finite real numbers.

Every constructor and function that takes a count, a size or a rate checks it
here, so that one rule holds everywhere: any integer type is an int (``3``,
``np.int64(3)``, ``np.prod((4, 4))``), ``bool`` is not, and a wrong type is a
TypeError while a value out of range is a ValueError, both naming ``where``
and the argument. The module imports nothing of gpucnn, so every floor
(backend, layers, trainer) may use it.
"""

from __future__ import annotations

import math
import numbers


def as_int(value, name: str, where: str, minimum: int | None = None) -> int:
    """``value`` as a Python int, if it is an integer (any ``numbers.Integral`` but bool) >= ``minimum``.

    Raises TypeError for other types (floats included, even 3.0) and
    ValueError below ``minimum``; both messages start with ``where`` and name ``name``.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{where}: {name} must be an int, got {value!r} ({type(value).__name__})")
    if minimum is not None and value < minimum:
        wanted = "a positive int" if minimum == 1 else f"an int >= {minimum}"
        raise ValueError(f"{where}: {name} must be {wanted}, got {value!r}")
    return int(value)


def as_float(value, name: str, where: str, low: float | None = None, high: float | None = None,
             low_open: bool = False, high_open: bool = False) -> float:
    """``value`` as a finite Python float inside the interval given by ``low``/``high``.

    ``low_open``/``high_open`` exclude the bound itself (``low=0, low_open=True``
    asks for a positive number). Raises TypeError for anything that is not a
    real number (bool, str, complex, None) and ValueError for NaN, infinities
    and values outside the interval, naming ``where``, ``name`` and the interval.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{where}: {name} must be a real number, got {value!r} ({type(value).__name__})")
    number = float(value)
    too_low = low is not None and (number <= low if low_open else number < low)
    too_high = high is not None and (number >= high if high_open else number > high)
    if not math.isfinite(number) or too_low or too_high:
        raise ValueError(f"{where}: {name} must be a finite number{_interval(low, high, low_open, high_open)}, "
                         f"got {value!r}")
    return number


def _interval(low, high, low_open, high_open) -> str:
    """`` in [0, 1)``, `` > 0``, `` >= 0`` or nothing: how a message states the allowed range."""
    if low is not None and high is not None:
        return f" in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if low is not None:
        return f" {'>' if low_open else '>='} {low:g}"
    if high is not None:
        return f" {'<' if high_open else '<='} {high:g}"
    return ""
