"""VINs: ISO 3779 shape and the check digit in position 9."""

from __future__ import annotations

import pytest

from caas.protocol.vin import InvalidVin, check_digit, is_valid, make_vin, model_year_code, validate


@pytest.mark.parametrize(
    "vin",
    ["1M8GDM9AXKP042788", "5YJSA1DG9DFP14705", "11111111111111111", "1HGCM82633A004352"],
)
def test_real_vins_are_valid(vin: str) -> None:
    assert is_valid(vin)
    assert validate(vin) == vin


def test_check_digit_ten_is_written_x() -> None:
    assert check_digit("1M8GDM9AXKP042788") == "X"
    assert check_digit("1M8GDM9A0KP042788") == "X"  # position 9 itself does not count


@pytest.mark.parametrize(
    ("vin", "reason"),
    [
        ("1M8GDM9A1KP042788", "check digit"),
        ("1M8GDM9AXKP04278", "17 characters"),
        ("1M8GDM9AXKP0427888", "17 characters"),
        ("1M8GDM9AXKP04278O", "except I, O, Q"),
        ("IM8GDM9AXKP042788", "except I, O, Q"),
        ("1m8gdm9axkp042788", "except I, O, Q"),
    ],
)
def test_invalid_vins_say_why(vin: str, reason: str) -> None:
    assert not is_valid(vin)
    with pytest.raises(InvalidVin, match=reason):
        validate(vin)


def test_make_vin_computes_the_check_digit() -> None:
    vin = make_vin("1M8", "GDM9A", "K", "P", 42788)
    assert vin == "1M8GDM9AXKP042788"
    made = make_vin("VCA", "AURA0", model_year_code(2026), "M", 1)
    assert made.startswith("VCAAURA0") and made.endswith("TM000001")
    assert is_valid(made)


def test_every_serial_makes_a_valid_vin() -> None:
    assert all(is_valid(make_vin("VCA", "B0REA", "T", "M", serial)) for serial in range(2000))


@pytest.mark.parametrize(("year", "code"), [(1980, "A"), (2000, "Y"), (2001, "1"), (2010, "A"),
                                            (2019, "K"), (2026, "T"), (2030, "Y")])  # fmt: skip
def test_model_year_codes(year: int, code: str) -> None:
    assert model_year_code(year) == code


def test_make_vin_refuses_parts_of_the_wrong_size() -> None:
    with pytest.raises(InvalidVin, match="vds"):
        make_vin("VCA", "AURA", "T", "M", 1)
    with pytest.raises(InvalidVin, match="serial"):
        make_vin("VCA", "AURA0", "T", "M", 1_000_000)
