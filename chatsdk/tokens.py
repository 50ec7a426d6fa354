"""``client.tokens``: mint and revoke short-lived chat-session (client) tokens."""

from __future__ import annotations

import msgspec

from ._config import (
    NOT_GIVEN,
    NotGiven,
    RetryPolicy,
    Timeout,
    check_header_value,
    check_origin,
    json_body,
)
from ._rules import expires_after_problem
from ._transport import Transport
from .errors import APIResponseValidationError, ValidationError
from .models import ChatSessionToken, CreateTokenRequest

__all__ = ["Tokens"]

_TOKEN = msgspec.json.Decoder(ChatSessionToken)


class Tokens:
    """Token operations; they need the secret API key and the project (server side only)."""

    def __init__(self, transport: Transport):
        self._transport = transport

    async def create(
        self,
        *,
        embed_origin: str,
        expires_after: int = 3600,
        user_identifier: str | None = None,
        timeout: Timeout | float | NotGiven | None = NOT_GIVEN,
        retries: RetryPolicy | int | NotGiven | None = NOT_GIVEN,
    ) -> ChatSessionToken:
        """Mint a client token for pages served from ``embed_origin`` (SPEC 1.2).

        ``embed_origin`` is the page's origin, ``scheme://host[:port]`` with no path;
        ``expires_after`` the token's lifetime in seconds, 1 to 3600; ``user_identifier``
        an optional id of the end user, kept in the token. ``timeout`` and ``retries``
        override the client's for this call (``None``: no limit, no retries).

        Raises :class:`ValidationError` (bad arguments, no API key or project),
        :class:`APIStatusError` subclasses (the server refused), :class:`APIConnectionError`
        / :class:`APITimeoutError`, or :class:`APIResponseValidationError` (a 2xx answer
        that is not a token; its body is withheld, as it may hold the token).

        >>> origin = "https://docs.example.com"
        >>> tok = await client.tokens.create(embed_origin=origin, expires_after=900)
        """
        check_origin("embed_origin", embed_origin)
        problem = expires_after_problem(expires_after)
        if problem is not None:
            raise ValidationError(f"expires_after {problem}, got {expires_after!r}")
        if user_identifier is not None and (
            not isinstance(user_identifier, str) or not user_identifier
        ):
            raise ValidationError("user_identifier must be a non-empty string when given")
        body = json_body(
            CreateTokenRequest(
                embed_origin=embed_origin,
                expires_after=expires_after,
                user_identifier=user_identifier,
            )
        )
        t = self._transport
        timeout_, retries_ = t.per_call(timeout, retries)
        url = t.url("tokens", "/rpc/chatSessions.create")
        token = await t.request_json(
            "POST",
            url,
            api="tokens",
            body=body,
            decoder=_TOKEN,
            timeout=timeout_,
            retries=retries_,
            show_body=False,  # a malformed answer may still hold the token
        )
        if token is None:
            raise APIResponseValidationError("the answer is empty", status=200, url=url)
        return token

    async def revoke(
        self,
        token: str | ChatSessionToken,
        *,
        timeout: Timeout | float | NotGiven | None = NOT_GIVEN,
        retries: RetryPolicy | int | NotGiven | None = NOT_GIVEN,
    ) -> None:
        """Revoke a client token (SPEC 1.3); revoking one twice is not an error.

        ``token`` is the token string or the :class:`ChatSessionToken`. Raises
        :class:`ValidationError` for an empty or malformed token string, and the
        status and connection errors of :meth:`create`.
        """
        if isinstance(token, ChatSessionToken):
            token = token.client_token
        if not isinstance(token, str) or not token.strip():
            raise ValidationError("token must be a non-empty client token string")
        check_header_value("token", token)  # a token never holds control characters
        t = self._transport
        timeout_, retries_ = t.per_call(timeout, retries)
        await t.request_json(
            "DELETE",
            t.url("tokens", "/rpc/chatSessions.revoke"),
            api="tokens",
            body=None,
            decoder=None,  # any 2xx is success, whatever its body (SPEC 1.3)
            params={"token": token},  # aiohttp percent-encodes it; never spliced into the URL
            timeout=timeout_,
            retries=retries_,
            retried_400_ok=True,
        )
