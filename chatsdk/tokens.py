"""``client.tokens``: mint and revoke short-lived chat-session (client) tokens."""

from __future__ import annotations

import msgspec

from ._config import RetryPolicy, Timeout, check_header_value, check_origin
from ._transport import Transport
from .errors import StreamError, ValidationError
from .models import ChatSessionToken, CreateTokenRequest

__all__ = ["Tokens"]

_TOKEN = msgspec.json.Decoder(ChatSessionToken)

# The public API's bounds for a client token's lifetime, in seconds.
MIN_EXPIRES_AFTER = 1
MAX_EXPIRES_AFTER = 3600


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
        timeout: Timeout | float | None = None,
        retries: RetryPolicy | int | None = None,
    ) -> ChatSessionToken:
        """Mint a client token for pages served from ``embed_origin``.

        >>> origin = "https://docs.example.com"
        >>> tok = await client.tokens.create(embed_origin=origin, expires_after=900)
        """
        check_origin("embed_origin", embed_origin)
        if (
            isinstance(expires_after, bool)
            or not isinstance(expires_after, int)
            or not MIN_EXPIRES_AFTER <= expires_after <= MAX_EXPIRES_AFTER
        ):
            raise ValidationError(
                f"expires_after must be an int from {MIN_EXPIRES_AFTER} to {MAX_EXPIRES_AFTER} "
                f"seconds, got {expires_after!r}"
            )
        if user_identifier is not None and (
            not isinstance(user_identifier, str) or not user_identifier
        ):
            raise ValidationError("user_identifier must be a non-empty string when given")
        body = msgspec.json.encode(
            CreateTokenRequest(
                embed_origin=embed_origin,
                expires_after=expires_after,
                user_identifier=user_identifier,
            )
        )
        t = self._transport
        raw = await t.request_json(
            "POST",
            t.url("tokens", "/rpc/chatSessions.create"),
            api="tokens",
            body=body,
            timeout=Timeout.coerce(timeout) if timeout is not None else t.timeout,
            retries=RetryPolicy.coerce(retries) if retries is not None else t.retries,
        )
        try:
            return _TOKEN.decode(raw)
        except (msgspec.DecodeError, ValueError, RecursionError) as exc:
            # msgspec raises UnicodeDecodeError (a ValueError) for bytes that are not UTF-8
            # and RecursionError for absurd nesting. The excerpt is withheld: a malformed
            # answer may still hold the token.
            raise StreamError(
                f"invalid chatSessions.create answer: {type(exc).__name__}: {exc}"
            ) from None

    async def revoke(
        self,
        token: str | ChatSessionToken,
        *,
        timeout: Timeout | float | None = None,
        retries: RetryPolicy | int | None = None,
    ) -> None:
        """Revoke a client token; revoking one twice is not an error."""
        if isinstance(token, ChatSessionToken):
            token = token.client_token
        if not isinstance(token, str) or not token.strip():
            raise ValidationError("token must be a non-empty client token string")
        check_header_value("token", token)  # a token never holds control characters
        t = self._transport
        await t.request_json(
            "DELETE",
            t.url("tokens", "/rpc/chatSessions.revoke"),
            api="tokens",
            body=None,
            params={"token": token},  # aiohttp percent-encodes it; never spliced into the URL
            timeout=Timeout.coerce(timeout) if timeout is not None else t.timeout,
            retries=RetryPolicy.coerce(retries) if retries is not None else t.retries,
            retried_400_ok=True,
        )
