"""Vehicle identification numbers (ISO 3779 / North American check digit in position 9).

A VIN has 17 characters from the digits and the capital letters except I, O and Q (too easily
read as 1 and 0): the manufacturer (WMI, positions 1-3), the vehicle's description (VDS, 4-8),
a check digit (9), the model year (10), the plant (11) and the serial number (12-17).

The check digit is the sum of each character's value (letters transliterated, digits as
themselves) times its position's weight, modulo 11, with 10 written as `X`. ISO 3779 leaves it
optional; the maker always sets it, and the platform refuses a VIN whose check digit is wrong.
"""

from __future__ import annotations

import re

LENGTH = 17
CHECK_DIGIT_POSITION = 9  # 1-based, as the standard counts

ALPHABET = "0123456789ABCDEFGHJKLMNPRSTUVWXYZ"

_VALUES = {
    **{digit: int(digit) for digit in "0123456789"},
    **dict(zip("ABCDEFGH", range(1, 9), strict=True)),
    **dict(zip("JKLMN", range(1, 6), strict=True)),
    "P": 7,
    "R": 9,
    **dict(zip("STUVWXYZ", range(2, 10), strict=True)),
}
_WEIGHTS = (8, 7, 6, 5, 4, 3, 2, 10, 0, 9, 8, 7, 6, 5, 4, 3, 2)
_SHAPE = re.compile(rf"^[{ALPHABET}]{{{LENGTH}}}$")

# Model year codes repeat every 30 years; letters skip I, O, Q, U, Z and the digit 0.
_YEAR_CODES = "ABCDEFGHJKLMNPRSTVWXY123456789"
_YEAR_CYCLE_START = 1980


class InvalidVin(ValueError):
    """Not a VIN: wrong length, a forbidden character, or a wrong check digit."""


def _check_shape(vin: str) -> None:
    if len(vin) != LENGTH:
        raise InvalidVin(f"a VIN has {LENGTH} characters, not {len(vin)}")
    if not _SHAPE.match(vin):
        bad = sorted({char for char in vin if char not in ALPHABET})
        raise InvalidVin(f"a VIN uses digits and capital letters except I, O, Q; found {bad}")


def check_digit(vin: str) -> str:
    """The check digit (`0`-`9` or `X`) for the 17 characters of `vin` (position 9 ignored)."""
    candidate = vin[: CHECK_DIGIT_POSITION - 1] + "0" + vin[CHECK_DIGIT_POSITION:]
    _check_shape(candidate)
    total = sum(_VALUES[char] * weight for char, weight in zip(candidate, _WEIGHTS, strict=True))
    remainder = total % 11
    return "X" if remainder == 10 else str(remainder)


def validate(vin: str) -> str:
    """`vin` itself when it is a valid VIN, else `InvalidVin` saying why."""
    _check_shape(vin)
    expected = check_digit(vin)
    if vin[CHECK_DIGIT_POSITION - 1] != expected:
        raise InvalidVin(
            f"wrong check digit in position {CHECK_DIGIT_POSITION}: expected {expected}"
        )
    return vin


def is_valid(vin: str) -> bool:
    try:
        validate(vin)
    except InvalidVin:
        return False
    return True


def model_year_code(year: int) -> str:
    """The character of position 10 for a model year (the codes repeat every 30 years)."""
    if year < _YEAR_CYCLE_START:
        raise ValueError("model years before 1980 have no standard code")
    return _YEAR_CODES[(year - _YEAR_CYCLE_START) % len(_YEAR_CODES)]


def make_vin(wmi: str, vds: str, year_code: str, plant: str, serial: int | str) -> str:
    """A valid VIN from its parts, with the check digit computed.

    `wmi` has 3 characters, `vds` 5, `year_code` and `plant` 1 each; `serial` is the number
    of the car at that plant (up to 6 digits, zero-padded).
    """
    serial_text = f"{serial:06d}" if isinstance(serial, int) else serial
    parts = {"wmi": (wmi, 3), "vds": (vds, 5), "year_code": (year_code, 1), "plant": (plant, 1)}
    for name, (value, size) in parts.items():
        if len(value) != size:
            raise InvalidVin(f"{name} has {size} characters, not {len(value)}")
    if len(serial_text) != 6:
        raise InvalidVin(f"serial has 6 characters, not {len(serial_text)}")
    draft = f"{wmi}{vds}0{year_code}{plant}{serial_text}".upper()
    return draft[: CHECK_DIGIT_POSITION - 1] + check_digit(draft) + draft[CHECK_DIGIT_POSITION:]
