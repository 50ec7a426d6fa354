"""Credentials of the reference server: API keys and client-token JWTs.

The origin rule lives in :mod:`chatsdk._rules` (shared with the client); the checks
of a request's headers are in :mod:`chatsdk.server.plumbing`.

Client tokens are HS256 JWTs shaped like the ones the public service issues
(SPEC §1.2): ``jti`` (a UUID), ``aud`` (``[embed_origin]``), ``iat``, ``exp``,
``project`` and, when given, ``sub`` (the user identifier). Only HS256 is ever
accepted, so ``alg: none`` and algorithm-confusion tokens are rejected.
"""

from __future__ import annotations

import hmac
import time
import uuid
from typing import Any, Final

import jwt
import msgspec

__all__ = [
    "ALGORITHM",
    "MIN_SECRET_BYTES",
    "TokenClaims",
    "TokenError",
    "TokenExpired",
    "TokenSigner",
    "keys_equal",
]

ALGORITHM: Final = "HS256"
# RFC 7518 §3.2: an HS256 key must be at least as long as the hash output (256 bits);
# PyJWT warns below that, so the server refuses shorter secrets up front.
MIN_SECRET_BYTES: Final = 32


class TokenError(Exception):
    """A client token is malformed, forged, uses another algorithm or lacks a claim."""


class TokenExpired(TokenError):
    """A client token's ``exp`` has passed."""


class TokenClaims(msgspec.Struct, frozen=True, kw_only=True):
    """The verified claims of a client token."""

    jti: str
    aud: list[str]
    iat: int
    exp: int
    project: str
    sub: str | None = None


def keys_equal(given: str | None, expected: str) -> bool:
    """Compare a presented secret with the expected one in constant time."""
    if given is None:
        return False
    # "replace": a header with undecodable bytes must compare unequal, not crash.
    return hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode())


class TokenSigner:
    """Mints and verifies the client tokens of one project with one HS256 secret."""

    def __init__(self, secret: str, project: str) -> None:
        if len(secret.encode()) < MIN_SECRET_BYTES:
            raise ValueError(f"signing_secret must be at least {MIN_SECRET_BYTES} bytes long")
        self._secret = secret
        self.project = project

    def __repr__(self) -> str:
        # The secret must never show up in a repr or a log line.
        return f"TokenSigner(project={self.project!r})"

    def mint(
        self, embed_origin: str, expires_after: int, user_identifier: str | None = None
    ) -> tuple[str, TokenClaims]:
        """A new signed token bound to ``embed_origin``, valid for ``expires_after`` s."""
        now = int(time.time())
        claims = TokenClaims(
            jti=str(uuid.uuid4()),
            aud=[embed_origin],
            iat=now,
            exp=now + expires_after,
            project=self.project,
            sub=user_identifier,
        )
        payload: dict[str, Any] = msgspec.to_builtins(claims)
        if user_identifier is None:
            payload.pop("sub", None)
        return jwt.encode(payload, self._secret, algorithm=ALGORITHM), claims

    def verify(self, token: str) -> TokenClaims:
        """The claims of a genuine, unexpired token; raises :class:`TokenError` otherwise.

        Revocation, project and origin are policy, checked by the caller.
        """
        try:
            payload = jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],
                # The audience is an origin checked against the request's Origin header
                # by the caller, not a fixed audience string.
                options={"verify_aud": False, "require": ["jti", "aud", "iat", "exp"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise TokenExpired("token expired") from exc
        except jwt.InvalidTokenError as exc:
            raise TokenError("invalid token") from exc
        aud = payload.get("aud")
        if isinstance(aud, str):
            payload["aud"] = [aud]
        try:
            return msgspec.convert(payload, TokenClaims)
        except msgspec.ValidationError as exc:
            raise TokenError("invalid token claims") from exc
