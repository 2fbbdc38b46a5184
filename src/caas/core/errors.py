"""One error hierarchy: each error carries its HTTP status, a stable code and a message."""

from __future__ import annotations

from typing import Any, ClassVar


class CaasError(Exception):
    status: ClassVar[int] = 400
    code: str = "error"

    def __init__(
        self, message: str, *, code: str | None = None, field: str | None = None, **extra: Any
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.field = field
        self.extra = extra

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field is not None:
            body["field"] = self.field
        if self.extra:
            body["details"] = self.extra
        return body


class InvalidInput(CaasError):
    """Input that is well-formed JSON but wrong for a field (a bad national id, say)."""

    status = 422
    code = "invalid_input"


class NotFound(CaasError):
    """Missing, or not the caller's to see: both answer the same so nothing leaks."""

    status = 404
    code = "not_found"


class NotAuthenticated(CaasError):
    status = 401
    code = "auth.required"


class Forbidden(CaasError):
    status = 403
    code = "auth.forbidden"


class Conflict(CaasError):
    """The request is valid but the object's state does not allow it now."""

    status = 409
    code = "conflict"


class PaymentFailed(CaasError):
    status = 402
    code = "payment.failed"


class TooManyRequests(CaasError):
    status = 429
    code = "rate_limited"


class UpstreamUnavailable(CaasError):
    status = 503
    code = "upstream.unavailable"
