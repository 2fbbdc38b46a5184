"""Money in integer minor units with its currency; VAT arithmetic rounds half up per line."""

from __future__ import annotations

from dataclasses import dataclass

from babel.numbers import format_currency


def percent_of(amount_minor: int, basis_points: int) -> int:
    """`amount * basis_points / 10000`, rounded half up (away from zero for positives)."""
    numerator = amount_minor * basis_points
    quotient, remainder = divmod(abs(numerator), 10_000)
    if remainder * 2 >= 10_000:
        quotient += 1
    return quotient if numerator >= 0 else -quotient


@dataclass(frozen=True, slots=True)
class Money:
    amount_minor: int
    currency: str

    def __post_init__(self) -> None:
        if isinstance(self.amount_minor, bool) or not isinstance(self.amount_minor, int):
            raise TypeError("Money.amount_minor must be an int of minor units")
        if len(self.currency) != 3 or not self.currency.isupper():
            raise ValueError(f"not an ISO 4217 currency: {self.currency!r}")

    def _same(self, other: Money) -> None:
        if other.currency != self.currency:
            raise ValueError(f"cannot mix {self.currency} and {other.currency}")

    def __add__(self, other: Money) -> Money:
        self._same(other)
        return Money(self.amount_minor + other.amount_minor, self.currency)

    def __sub__(self, other: Money) -> Money:
        self._same(other)
        return Money(self.amount_minor - other.amount_minor, self.currency)

    def share(self, basis_points: int) -> Money:
        """A share of this amount (VAT, a deposit), rounded half up."""
        return Money(percent_of(self.amount_minor, basis_points), self.currency)

    @classmethod
    def zero(cls, currency: str) -> Money:
        return cls(0, currency)

    def format(self, locale: str = "en") -> str:
        return format_currency(self.amount_minor / 100, self.currency, locale=locale)

    def __str__(self) -> str:
        return f"{self.amount_minor / 100:.2f} {self.currency}"
