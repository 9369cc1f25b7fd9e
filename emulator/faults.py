"""Test hooks that make the emulator misbehave on purpose: per-verb/resource faults and
fail-stop after N writes. Reached through `Emulator.faults`, never over HTTP."""

from __future__ import annotations

from dataclasses import dataclass, field

from emulator.errors import ApiError, status_body
from emulator.resources import ResourceType


@dataclass
class Fault:
    verb: str
    """'create', 'update', 'patch', 'delete', 'bind', 'get', 'list', 'watch' or '*'."""
    resource: str
    """A plural ('pods'), 'plural.group', or '*'."""
    code: int = 500
    delay: float = 0.0
    times: int | None = None
    """How many requests it hits (None: until cleared)."""
    drop_watch_after: int | None = None
    """For 'watch': end the stream after this many events (a dropped watch)."""
    agent: str | None = None
    """Only requests whose User-Agent contains this (one client of several); None: all."""
    retry_after: int | None = None
    """Seconds sent as `Retry-After` with the error (as the server does with 429)."""

    def matches(self, verb: str, rt: ResourceType, agent: str = "") -> bool:
        return (
            self.verb in ("*", verb)
            and self.resource in ("*", rt.plural, rt.qualified_plural)
            and (self.agent is None or self.agent in agent)
        )


@dataclass
class Faults:
    active: list[Fault] = field(default_factory=list)
    writes_left: int | None = None
    """Fail-stop: after this many more writes every write fails with 503."""

    def inject(self, fault: Fault) -> Fault:
        self.active.append(fault)
        return fault

    def clear(self) -> None:
        self.active.clear()
        self.writes_left = None

    def fail_after_writes(self, count: int) -> None:
        self.writes_left = count

    def take(self, verb: str, rt: ResourceType, agent: str = "") -> Fault | None:
        """The fault hitting this request (counted), if any."""
        for fault in self.active:
            if fault.matches(verb, rt, agent):
                if fault.times is not None:
                    fault.times -= 1
                    if fault.times <= 0:
                        self.active.remove(fault)
                return fault
        return None

    def before_write(self, verb: str, rt: ResourceType) -> None:
        if self.writes_left is None:
            return
        if self.writes_left <= 0:
            raise ApiError(
                503,
                status_body(
                    503,
                    "the server is currently unable to handle the request (fail-stop)",
                    "ServiceUnavailable",
                ),
            )
        self.writes_left -= 1


def fault_error(fault: Fault) -> ApiError:
    reasons = {
        400: "BadRequest",
        403: "Forbidden",
        404: "NotFound",
        409: "Conflict",
        410: "Expired",
        422: "Invalid",
        429: "TooManyRequests",
        500: "InternalError",
        503: "ServiceUnavailable",
        504: "Timeout",
    }
    details = None if fault.retry_after is None else {"retryAfterSeconds": fault.retry_after}
    return ApiError(
        fault.code,
        status_body(
            fault.code,
            f"injected fault ({fault.verb} {fault.resource})",
            reasons.get(fault.code),
            details,
        ),
        None if fault.retry_after is None else {"Retry-After": str(fault.retry_after)},
    )
