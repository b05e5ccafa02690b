"""One typed error hierarchy; each error knows its HTTP status, OpenAI type/code and retryability."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # app.routing imports this module
    from app.routing.cooldown import Cooldown


class ProxyError(Exception):
    """Base of every error the proxy renders to a client as an OpenAI error body."""

    status: int = 500
    type: str = "server_error"
    code: str | None = None
    retryable: bool = False
    # Set by a provider adapter when the failure is the key's (429, 401, 402, 403): the router rests
    # the key by its class, and the gateway moves to the model's next key.
    cooldown: Cooldown | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        retry_after: float | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.retry_after = retry_after

    def to_dict(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


class InvalidRequest(ProxyError):
    status = 400
    type = "invalid_request_error"


class AuthenticationFailed(ProxyError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class ModelNotFound(ProxyError):
    status = 404
    type = "invalid_request_error"
    code = "model_not_found"


class NotFound(ProxyError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"


class MethodNotAllowed(ProxyError):
    status = 405
    type = "invalid_request_error"
    code = "method_not_allowed"


class RequestTooLarge(ProxyError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class ClientClosedRequest(ProxyError):
    """The client closed its connection while its request waited for a thread: it is not sent upstream
    and spends no quota. Nobody reads the answer; the access log and metrics count it as nginx does."""

    status = 499
    type = "invalid_request_error"
    code = "client_closed_request"


class RateLimited(ProxyError):
    """Every candidate is out of quota or cooling down (ours), or an upstream said 429."""

    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"
    retryable = True


class UpstreamError(ProxyError):
    """The upstream failed (5xx, connection trouble, unreadable answer): another model may serve."""

    status = 502
    type = "upstream_error"
    code = "upstream_error"
    retryable = True


class UpstreamAuthError(UpstreamError):
    """The proxy's own credentials were rejected upstream (401/403): the client can't fix it."""

    code = "upstream_auth_error"


class UpstreamBadRequest(InvalidRequest):
    """The upstream rejected the client's request (4xx other than 401/403/429): not retryable."""

    code = "upstream_bad_request"


class UpstreamTimeout(UpstreamError):
    status = 504
    type = "timeout_error"
    code = "upstream_timeout"


class ServiceUnavailable(ProxyError):
    status = 503
    type = "server_error"
    code = "service_unavailable"
    retryable = True


class PermissionDenied(ProxyError):
    """A valid key that may not do this (an admin-only endpoint, another client's usage)."""

    status = 403
    type = "permission_error"
    code = "permission_denied"


class ModelNotAllowed(PermissionDenied):
    """The model is outside the client's `models` list."""

    code = "model_not_allowed"


class ClientQuotaExceeded(RateLimited):
    """The client's own window is spent (not the models'): waiting is the only cure, no fallback."""

    code = "client_quota_exceeded"
    retryable = False
