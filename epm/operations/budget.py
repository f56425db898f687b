"""Splitting a budget across parts in proportion to weights, to the cent, summing exactly to the total."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction

CENT = Decimal("0.01")


def split_amount(total: Decimal, weights: Mapping[str, Fraction | Decimal | int | float]) -> dict[str, Decimal]:
    """``total`` split across the keys of ``weights``, in cents, the parts summing exactly to ``total``.

    Each part is its exact share rounded down; the cents left over go one each to the parts that
    lost most in rounding (the earlier key on a tie): the largest-remainder method.
    """
    if total < 0:
        raise ValueError("A budget cannot be negative.")
    exact = {key: _fraction(weight) for key, weight in weights.items()}
    if any(weight < 0 for weight in exact.values()):
        raise ValueError("Budget weights cannot be negative.")
    whole = sum(exact.values(), Fraction(0))
    if not exact or whole == 0:
        raise ValueError("A budget needs at least one part with a positive weight.")
    cents = int(total.quantize(CENT, rounding=ROUND_HALF_UP) * 100)
    shares = {key: cents * weight / whole for key, weight in exact.items()}
    parts = {key: share.numerator // share.denominator for key, share in shares.items()}
    left = cents - sum(parts.values())
    order = list(exact)
    by_loss = sorted(order, key=lambda key: (-(shares[key] - parts[key]), order.index(key)))
    for key in by_loss[:left]:
        parts[key] += 1
    return {key: (Decimal(part) / 100).quantize(CENT) for key, part in parts.items()}


def _fraction(weight: Fraction | Decimal | int | float) -> Fraction:
    return weight if isinstance(weight, Fraction) else Fraction(str(weight))
