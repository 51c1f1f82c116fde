"""Buy-now links: a signed, expiring URL that lets the customer accept one quote.

The link carries a JWT signed with its own secret (`DEALFLOW_BUY_NOW_SECRET`, not the
user-token secret) and audience, naming the quote and its opportunity. A link that was
altered, has expired, or was signed with another key is refused.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

import jwt
from pydantic import SecretStr

from dealflow_common.http.problems import Problem

_AUDIENCE = "dealflow-buy-now"


@dataclass(frozen=True, slots=True)
class BuyNowLink:
    url: str
    token: str
    expires_at: datetime


class BuyNowLinks:
    def __init__(self, secret: SecretStr, base_url: str, ttl: timedelta) -> None:
        self._secret = secret.get_secret_value()
        self._base_url = base_url.rstrip("/")
        self._ttl = ttl

    def issue(
        self, quote_id: UUID, opportunity_id: UUID, valid_until: datetime, now: datetime
    ) -> BuyNowLink:
        """A link that lasts its ttl, but never beyond the quote's own validity."""
        expires_at = min(now + self._ttl, valid_until)
        token = jwt.encode(
            {
                "sub": str(quote_id),
                "opp": str(opportunity_id),
                "aud": _AUDIENCE,
                "iat": int(now.timestamp()),
                "exp": int(expires_at.timestamp()),
                "jti": str(uuid.uuid4()),
            },
            self._secret,
            algorithm="HS256",
        )
        return BuyNowLink(f"{self._base_url}/buy-now/{token}", token, expires_at)

    def verify(self, token: str, now: datetime) -> tuple[UUID, UUID]:
        """(quote id, opportunity id) of a genuine, unexpired link."""
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=["HS256"],
                audience=_AUDIENCE,
                # Time is judged against the service's clock (`now`), not the machine's.
                options={
                    "require": ["sub", "opp", "exp"],
                    "verify_exp": False,
                    "verify_iat": False,
                    "verify_nbf": False,
                },
            )
            if int(claims["exp"]) <= now.timestamp():
                raise jwt.ExpiredSignatureError("the link has expired")
            return UUID(claims["sub"]), UUID(claims["opp"])
        except (jwt.PyJWTError, ValueError, KeyError) as error:
            raise Problem(
                403,
                "invalid-link",
                "Invalid buy-now link",
                f"this buy-now link is not valid: {error}",
            ) from None
