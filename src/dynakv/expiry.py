"""Expiry of values (TTL): which siblings a read at a given wall time still shows, when a
whole stored state has expired, and the checks of a lifetime a client asks for. Pure: the
time is always passed in (wall-clock seconds, as `Node.handle` gets it), never read here.

A sibling's `expires` is absolute wall-clock milliseconds (0: never). A read hides a
sibling once `now` reaches it; a state whose every live sibling has expired reads as not
found, and the reaper then deletes it with the state's own context (core/reaper.py).
"""

from __future__ import annotations

import math

from dynakv import versions
from dynakv.errors import InvalidRequest
from dynakv.versions import Clock, Sibling

# The longest lifetime a client may give, in seconds (ten years): past it a typo (a
# timestamp where a duration was meant) is refused instead of kept for ever.
MAX_TTL_SECONDS = 10 * 365 * 24 * 3600
MAX_TTL_MS = MAX_TTL_SECONDS * 1000


def now_ms(now: float) -> int:
    """Wall-clock seconds as the integer milliseconds expiry times are kept in."""
    return int(now * 1000)


def expired(sibling: Sibling, now: float) -> bool:
    """True when the sibling has an expiry and `now` has reached it."""
    return sibling.expires != 0 and sibling.expires <= now_ms(now)


def visible(clock: Clock, now: float) -> list[Sibling]:
    """The live siblings a read at `now` shows: not tombstones, not expired."""
    live = versions.live_values(clock)
    for s in live:
        if s.expires:  # the rare case; most reads pay one attribute read per value
            at = now_ms(now)
            return [s for s in live if s.expires == 0 or s.expires > at]
    return live


def state_expiry(clock: Clock) -> int:
    """When the whole state stops showing any value (ms), 0 if never: the latest expiry of
    its live siblings when every one of them has an expiry; 0 when one lives for ever or
    none lives (tombstones only: the tombstone sweep's business)."""
    latest = 0
    for sibling in versions.values(clock):
        if sibling.deleted:
            continue
        if sibling.expires == 0:
            return 0
        latest = max(latest, sibling.expires)
    return latest


def remaining_ms(expires: int, now: float) -> int:
    """Milliseconds left before `expires` (at least 1 while not expired), -1 for none."""
    if expires == 0:
        return -1
    return max(1, expires - now_ms(now))


def ttl_header(text: str, now: float) -> int:
    """The absolute expiry (ms) of an `X-Dynakv-TTL: <seconds>` header; InvalidRequest
    naming the fault for anything but a positive number of seconds up to ten years."""
    try:
        seconds = float(text)
    except ValueError:
        raise InvalidRequest(
            f"X-Dynakv-TTL must be a number of seconds, got {text[:64]!r}"
        ) from None
    if math.isnan(seconds) or seconds <= 0:
        raise InvalidRequest(f"X-Dynakv-TTL must be positive, got {text[:64]!r}")
    if seconds > MAX_TTL_SECONDS:
        raise InvalidRequest(
            f"X-Dynakv-TTL is {text[:64]} seconds; the most is {MAX_TTL_SECONDS} (ten years)"
        )
    return now_ms(now) + max(1, round(seconds * 1000))


def check_expires(expires: int) -> None:
    """InvalidRequest unless an expiry a client sent fits a stored record: 0 (none) or
    epoch milliseconds below 2**63 (one in the past is allowed: the value is born expired).
    How far ahead a lifetime may reach is each front end's rule."""
    if not 0 <= expires < 2**63:
        raise InvalidRequest(f"expires must be 0 or epoch milliseconds below 2**63, got {expires}")
