"""DynamoDB numbers: exact decimals of up to 38 significant digits, magnitude 1E-130 to
just under 1E+126. Parsing, canonical text, and arithmetic with DynamoDB's errors. Pure.
"""

from __future__ import annotations

import decimal
from decimal import Decimal

from dynakv.dynamodb.errors import ValidationException

MAX_DIGITS = 38
# Exponents of the most significant digit: 1E-130 is the smallest magnitude and
# 9.99...E+125 the largest.
MIN_ADJUSTED_EXPONENT = -130
MAX_ADJUSTED_EXPONENT = 125

# Wide enough that + and - of two valid numbers are exact, so checking the result against
# DynamoDB's limits sees the true value (a 38-digit context would round silently).
_EXACT = decimal.Context(prec=400, Emax=10_000, Emin=-10_000, traps=[decimal.InvalidOperation])

NOT_A_NUMBER = "The parameter cannot be converted to a numeric value"
OVERFLOW = (
    "Number overflow. Attempting to store a number with magnitude larger than supported range"
)
UNDERFLOW = (
    "Number underflow. Attempting to store a number with magnitude smaller than supported range"
)
TOO_PRECISE = "Attempting to store more than 38 significant digits in a Number"


def parse_number(text: object) -> Decimal:
    """The Decimal a wire N string stands for, checked against DynamoDB's limits."""
    if not isinstance(text, str) or not text or text != text.strip():
        raise ValidationException(f"{NOT_A_NUMBER}: {text}")
    lowered = text.lower()
    if "nan" in lowered or "inf" in lowered or "_" in text:
        raise ValidationException(f"{NOT_A_NUMBER}: {text}")
    try:
        value = Decimal(text)
    except decimal.InvalidOperation:
        raise ValidationException(f"{NOT_A_NUMBER}: {text}") from None
    return check_number(value)


def check_number(value: Decimal, too_precise: str = TOO_PRECISE) -> Decimal:
    """`value` normalised (no trailing zeros, -0 is 0), or DynamoDB's range/precision error."""
    if value.is_zero():
        return Decimal(0)
    value = value.normalize(_EXACT)
    if value.adjusted() > MAX_ADJUSTED_EXPONENT:
        raise ValidationException(OVERFLOW)
    if value.adjusted() < MIN_ADJUSTED_EXPONENT:
        raise ValidationException(UNDERFLOW)
    if len(value.as_tuple().digits) > MAX_DIGITS:
        raise ValidationException(too_precise)
    return value


def number_text(value: Decimal) -> str:
    """Canonical wire text: plain notation, no exponent, no trailing zeros ("1E+2" -> "100")."""
    if value.is_zero():
        return "0"
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def canonical_number(text: object) -> str:
    """The canonical wire text of a wire N string, or DynamoDB's error."""
    return number_text(parse_number(text))


# DynamoDB reports a sum that needs more than 38 digits (1E+50 + 1) as an overflow.
def add(left: Decimal, right: Decimal) -> Decimal:
    return check_number(_EXACT.add(left, right), too_precise=OVERFLOW)


def subtract(left: Decimal, right: Decimal) -> Decimal:
    return check_number(_EXACT.subtract(left, right), too_precise=OVERFLOW)
