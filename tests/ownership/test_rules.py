"""The change of owner's pure rules: the code a person types, and what the seller gets back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from caas.ownership import rules

START = datetime(2026, 1, 15, 9, tzinfo=UTC)
MONTH_END = datetime(2026, 2, 15, 9, tzinfo=UTC)  # 31 days


def test_a_code_is_two_groups_of_four_unambiguous_characters() -> None:
    codes = {rules.new_code() for _ in range(200)}
    assert len(codes) == 200
    for code in codes:
        assert len(code) == 9 and code[4] == "-"
        assert not set(code.replace("-", "")) - set(rules.CODE_ALPHABET)
        assert not set(code) & set("ILOU")


def test_the_code_matches_however_a_person_types_it() -> None:
    stored = rules.code_hash("secret", "VCAAURA02TM000001", "1K0M-ZZ9A")
    for typed in ("1K0M-ZZ9A", "1k0m zz9a", " 1KOM-ZZ9A ", "IK0M-ZZ9A", "lk0mzz9a"):
        assert rules.code_matches("secret", "vcaaura02tm000001", typed, stored), typed
    assert not rules.code_matches("secret", "VCAAURA02TM000001", "1K0M-ZZ9B", stored)
    assert not rules.code_matches("other", "VCAAURA02TM000001", "1K0M-ZZ9A", stored)
    assert not rules.code_matches("secret", "VCAAURA02TM000002", "1K0M-ZZ9A", stored)
    assert "1K0MZZ9A" not in stored


def test_what_the_seller_gets_back_follows_the_offers_policy() -> None:
    ten_days_in = START + timedelta(days=10)
    cut = {"paid_minor": 3_630, "valid_from": START, "valid_until": MONTH_END, "at": ten_days_in}
    assert rules.refund_minor("none", **cut) == 0
    assert rules.refund_minor("end_of_period", **cut) == 0
    assert rules.refund_minor("full", **cut) == 3_630
    assert rules.refund_minor("unused_days", **cut) == 3_630 * 21 // 31
    not_begun = {**cut, "at": START - timedelta(hours=1)}
    assert rules.refund_minor("none", **not_begun) == 3_630
    forever = {**cut, "valid_until": None}
    assert rules.refund_minor("unused_days", **forever) == 0


@given(
    paid=st.integers(min_value=0, max_value=10**9),
    days=st.integers(min_value=1, max_value=3 * 366),
    used=st.floats(min_value=0, max_value=1),
    policy=st.sampled_from(["none", "end_of_period", "unused_days", "full"]),
)
def test_a_refund_is_never_negative_nor_more_than_was_paid(
    paid: int, days: int, used: float, policy: str
) -> None:
    until = START + timedelta(days=days)
    at = START + (until - START) * used
    refund = rules.refund_minor(policy, paid_minor=paid, valid_from=START, valid_until=until, at=at)
    assert 0 <= refund <= paid
