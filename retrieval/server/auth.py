"""The token check: a bearer header, or the signed session cookie that /login issues; wrong tokens are slowed down."""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass
from enum import Enum
from typing import Awaitable, Callable

import anyio
from starlette.datastructures import Headers
from starlette.requests import cookie_parser

from retrieval.server.settings import ServerSettings

COOKIE = "clipdex_session"
_VERSION = "v2"
_CLOCK_SKEW_S = 300  # a cookie issued "in the future" by less than this is still accepted


class Credential(Enum):
    VALID = "valid"
    ABSENT = "absent"  # no bearer token, and no session cookie this server signed
    EXPIRED = "expired"  # a session cookie this server signed, older than its lifetime
    WRONG = "wrong"  # a bearer token that is not the token: a guess, so its answer is slowed down


@dataclass(frozen=True)
class Clock:
    """Time as the token checks see it; tests pass one they control."""

    now: Callable[[], float] = time.time  # wall clock: cookie issue times outlive a restart
    monotonic: Callable[[], float] = time.monotonic
    sleep: Callable[[float], Awaitable[None]] = anyio.sleep


class FailureThrottle:
    """Answers wrong tokens at a bounded rate: `burst` at once, then one per `interval_s`.

    Only failing requests wait (each reserves the next free answer slot, so parallel
    guesses queue up too); a right token is never delayed or refused, so a flood of
    wrong guesses cannot lock the owner out.
    """

    def __init__(self, burst: int, interval_s: float, clock: Clock) -> None:
        self.burst = burst
        self.interval_s = interval_s
        self.clock = clock
        self._next_slot = float("-inf")

    def delay_s(self) -> float:
        """Record one failure now; return how long its answer must wait."""
        now = self.clock.monotonic()
        self._next_slot = max(self._next_slot, now) + self.interval_s
        return max(0.0, self._next_slot - now - self.burst * self.interval_s)

    async def wait_after_failure(self) -> None:
        delay = self.delay_s()
        if delay > 0:
            await self.clock.sleep(delay)


class Auth:
    """Checks a request's credentials against the server's token, and issues session cookies.

    A cookie is `v2.ISSUED.SIGNATURE`: its issue time (Unix seconds) signed with a key
    derived from the token. It never holds the token, stays valid across restarts
    with the same token, and is refused once `session_lifetime_s` has passed.
    """

    def __init__(self, token: str, settings: ServerSettings, clock: Clock | None = None) -> None:
        self.clock = clock or Clock()
        self.lifetime_s = settings.session_lifetime_s
        self.throttle = FailureThrottle(settings.auth_failure_burst, settings.auth_failure_interval_s, self.clock)
        self._token = token.encode()
        self._key = hmac.new(self._token, b"clipdex-session-key-" + _VERSION.encode(), hashlib.sha256).digest()

    def is_token(self, candidate: str) -> bool:
        return hmac.compare_digest(candidate.encode(), self._token)

    def check(self, headers: Headers) -> Credential:
        """What the request's bearer header and session cookie amount to."""
        scheme, _, value = headers.get("authorization", "").partition(" ")
        bearer = value.strip() if scheme.lower() == "bearer" else ""
        if bearer and self.is_token(bearer):
            return Credential.VALID
        session = self.session(cookie_parser(headers.get("cookie", "")).get(COOKIE, ""))
        return Credential.WRONG if bearer and session is not Credential.VALID else session

    def new_session(self) -> str:
        """A fresh session cookie value, issued now."""
        issued = str(int(self.clock.now()))
        return f"{_VERSION}.{issued}.{self._sign(issued)}"

    def session(self, value: str) -> Credential:
        """VALID, EXPIRED, or ABSENT for a value this server did not sign (guessing a signature is hopeless,
        so a bad one is not counted as a failure: an old cookie never slows its owner down)."""
        version, _, rest = value.partition(".")
        issued, _, signature = rest.partition(".")
        if version != _VERSION or not issued.isdigit() or len(issued) > 12:
            return Credential.ABSENT
        if not hmac.compare_digest(signature.encode(), self._sign(issued).encode()):
            return Credential.ABSENT
        age_s = self.clock.now() - int(issued)
        return Credential.VALID if -_CLOCK_SKEW_S <= age_s <= self.lifetime_s else Credential.EXPIRED

    def _sign(self, issued: str) -> str:
        return hmac.new(self._key, f"{_VERSION}.{issued}".encode(), hashlib.sha256).hexdigest()
