"""The file tests pay deposits for real: the billing tests' payment sandbox, served over HTTP,
and settings that point the platform at it."""

from tests.billing.conftest import payment_sandbox, settings

__all__ = ["payment_sandbox", "settings"]
