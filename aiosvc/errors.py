"""Domain errors: each carries the API's error code, HTTP status and optional details.

The core raises these; the web front door turns them into the error envelope. Nothing here
knows about aiohttp.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar


class AppError(Exception):
    """Base of every error the API reports with its own code."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        details: Mapping[str, Any] | None = None,
        code: str | None = None,
        status: int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details = dict(details) if details else None
        # A specific code or status on an instance of a more generic class.
        if code is not None:
            self.code = code  # type: ignore[misc]
        if status is not None:
            self.status = status  # type: ignore[misc]
        self.headers = dict(headers) if headers else {}

    def envelope(self) -> dict[str, Any]:
        """Return the API's error envelope for this error."""
        body: dict[str, Any] = {"code": self.code, "message": self.message, "status": self.status}
        if self.details:
            body["details"] = self.details
        return {"error": body}


class BadRequest(AppError):
    """The request is malformed (bad JSON, wrong media, bad parameter)."""

    status = 400
    code = "bad_request"


class InvalidJSON(BadRequest):
    """The body is not valid JSON (or not valid UTF-8)."""

    code = "invalid_json"


class ValidationFailed(BadRequest):
    """One or more fields are invalid; ``details.fields`` maps each path to its problem."""

    code = "validation_error"

    def __init__(self, fields: Mapping[str, str], message: str | None = None) -> None:
        names = ", ".join(sorted(fields))
        super().__init__(message or f"invalid field(s): {names}", details={"fields": dict(fields)})
        self.fields = dict(fields)


class InvalidParameter(BadRequest):
    """A query parameter is missing, malformed or out of range."""

    code = "invalid_parameter"

    def __init__(self, name: str, problem: str) -> None:
        super().__init__(f"query parameter {name!r}: {problem}", details={"parameter": name})


class InvalidConfig(BadRequest):
    """A reload found the configuration unusable; ``details.errors`` has one line per problem,
    as ``aiosvc check-config`` prints them."""

    code = "invalid_config"

    def __init__(self, errors: Sequence[str]) -> None:
        super().__init__(
            "the configuration is invalid; nothing was changed", details={"errors": list(errors)}
        )


class Unauthorized(AppError):
    """No valid credentials were given."""

    status = 401
    code = "unauthorized"


class Forbidden(AppError):
    """The request is refused whatever credentials it carries."""

    status = 403
    code = "forbidden"


class NotFound(AppError):
    """The thing asked for does not exist (or its id is malformed)."""

    status = 404
    code = "not_found"

    @classmethod
    def of(cls, kind: str, ident: str) -> NotFound:
        """Build the standard not-found error for a resource kind and id."""
        shown = ident if len(ident) <= 64 else ident[:61] + "..."
        return cls(f"{kind} {shown!r} not found", details={"kind": kind})


class Conflict(AppError):
    """The request conflicts with the resource's current state."""

    status = 409
    code = "conflict"


class SessionEnded(Conflict):
    """The session has ended and takes no more messages."""

    code = "session_ended"


class PayloadTooLarge(AppError):
    """The body is over the configured size limit."""

    status = 413
    code = "payload_too_large"


class UnsupportedMediaType(AppError):
    """A body was sent with a content type other than application/json."""

    status = 415
    code = "unsupported_media_type"


class Unprocessable(AppError):
    """The request is well formed but names something that cannot be used."""

    status = 422
    code = "unprocessable"


class RateLimited(AppError):
    """Too many requests; ``Retry-After`` says when to try again."""

    status = 429
    code = "rate_limited"


class UpstreamError(AppError):
    """An agent's upstream server failed or answered something unusable."""

    status = 502
    code = "upstream_error"


class Unavailable(AppError):
    """The service cannot take this now (shutting down, database unusable)."""

    status = 503
    code = "unavailable"


class PeerUnavailable(Unavailable):
    """A remote session's computer cannot be reached now: its writes wait for it."""

    code = "peer_unavailable"


class InsufficientStorage(AppError):
    """A change could not be made durable because the disk (or the database) is full; nothing
    of it was stored."""

    status = 507
    code = "insufficient_storage"
