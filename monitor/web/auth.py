"""Bearer tokens of ``server.tokens``: who is asking, and may they change things?

Only SHA-256 digests of the tokens are held, and a presented token is compared with every one of them in
constant time (``hmac.compare_digest`` on equal-length digests): neither the time taken nor an early exit
tells a caller how much of a guess was right, or which token it came close to.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import threading
import time
from collections.abc import Callable
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


# --- token guessing ------------------------------------------------------------------------------------

GUESS_LIMIT = 10  # wrong tokens from one address within GUESS_WINDOW before it is refused
GUESS_WINDOW = 60.0  # seconds
GUESS_BLOCK = 300.0  # seconds an address is refused (429) once it reached the limit
GUESS_ADDRESSES = 10_000  # addresses tracked at once: a flood from many addresses cannot grow memory


@dataclass
class _Guesses:
    window_start: float
    failures: int = 0
    blocked_until: float = 0.0


class GuessLimiter:
    """Wrong tokens per client address: after ``limit`` within ``window`` seconds, the address is answered
    429 for ``block`` seconds, whatever it sends (a right token too: the guesser must not learn it guessed
    right). Other addresses are unaffected. Tokens are 16+ random characters, so this does not make a
    guess feasible; it keeps a guesser from hammering the constant-time comparison and fills no log.

    ``failed`` returns True exactly when an address becomes blocked: the caller logs that once per window.
    Thread-safe; ``clock`` is monotonic seconds (injected by tests).
    """

    def __init__(
        self,
        *,
        limit: int = GUESS_LIMIT,
        window: float = GUESS_WINDOW,
        block: float = GUESS_BLOCK,
        max_addresses: int = GUESS_ADDRESSES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.window = window
        self.block = block
        self.max_addresses = max_addresses
        self.clock = clock
        self._by_address: dict[str, _Guesses] = {}
        self._lock = threading.Lock()

    def retry_after(self, address: str) -> int | None:
        """Whole seconds until ``address`` may try again, or None when it is not blocked."""
        now = self.clock()
        with self._lock:
            guesses = self._by_address.get(address)
            if guesses is None or guesses.blocked_until <= now:
                return None
            return max(1, math.ceil(guesses.blocked_until - now))

    def failed(self, address: str) -> bool:
        """Count a wrong token from ``address``; True when this one reached the limit (now blocked)."""
        now = self.clock()
        with self._lock:
            guesses = self._by_address.get(address)
            if guesses is None or (now - guesses.window_start > self.window and guesses.blocked_until <= now):
                if guesses is None and len(self._by_address) >= self.max_addresses:
                    self._forget_idle(now)
                    if len(self._by_address) >= self.max_addresses:
                        return False  # every tracked address is blocked: keep them so, track no more
                guesses = self._by_address[address] = _Guesses(now)
            guesses.failures += 1
            if guesses.failures >= self.limit and guesses.blocked_until <= now:
                guesses.blocked_until = now + self.block
                return True
            return False

    def _forget_idle(self, now: float) -> None:
        """Drop addresses whose window and block are over; if none are, the oldest windows (never blocks)."""
        idle = [
            address
            for address, g in self._by_address.items()
            if now - g.window_start > self.window and g.blocked_until <= now
        ]
        if not idle:
            unblocked = sorted(
                (g.window_start, a) for a, g in self._by_address.items() if g.blocked_until <= now
            )
            idle = [a for _, a in unblocked[: max(1, len(self._by_address) // 10)]]
        for address in idle:
            del self._by_address[address]
