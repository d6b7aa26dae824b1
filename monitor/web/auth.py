"""Bearer tokens of ``server.tokens``: who is asking, and may they change things?

Only SHA-256 digests of the tokens are held, and a presented token is compared with every one of them in
constant time (``hmac.compare_digest`` on equal-length digests): neither the time taken nor an early exit
tells a caller how much of a guess was right, or which token it came close to.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from monitor.config import ApiToken

ROLES = ("viewer", "responder")


@dataclass(frozen=True)
class Principal:
    """The holder of a token: its name is what logs and the alert history record (never the token)."""

    name: str
    role: str

    @property
    def may_respond(self) -> bool:
        return self.role == "responder"


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


class TokenRegistry:
    def __init__(self, tokens: list[ApiToken]) -> None:
        self._entries = [(_digest(t.token.get_secret_value()), Principal(t.name, t.role)) for t in tokens]

    @property
    def enabled(self) -> bool:
        return bool(self._entries)

    def authenticate(self, presented: str | None) -> Principal | None:
        if not presented:
            return None
        digest = _digest(presented)
        found: Principal | None = None
        for expected, principal in self._entries:  # every entry, whether or not one matched already
            if hmac.compare_digest(digest, expected):
                found = principal
        return found

    def by_name(self, name: str) -> Principal | None:
        """A principal by token name (a console session names its token; the token is not kept)."""
        for _, principal in self._entries:
            if principal.name == name:
                return principal
        return None
