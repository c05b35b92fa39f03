"""Per-hook settings with their safe defaults, built from the compiler's plain data.

The compiler (vegafs.vm) parses a hook's ``budget``, ``capabilities``,
``failure``, ``retry`` and ``circuit_breaker`` settings into plain data; this
module turns that into typed, validated settings and fills in the defaults
documented in docs/hooks.md. Why defaults matter: a hook with no settings runs
inside a filesystem operation, so it gets a small budget, ``failure closed``
and no capability beyond its own event (it reads ``ev.data`` through the event,
not through the VFS).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from vegafs.vm.budget import Budget
from vegafs.vm.values import Duration

#: Default budget of a hook run: small enough that a runaway hook costs a
#: filesystem operation at most ~50 ms, big enough for real per-file work.
DEFAULT_STEPS = 100_000
DEFAULT_TIME_S = 0.05
DEFAULT_MEMORY = 16 << 20
#: Upper bounds a hook may not raise its budget beyond (the daemon must stay responsive).
MAX_STEPS = 100_000_000
MAX_TIME_S = 10.0
MAX_MEMORY = 512 << 20

EVENTS = frozenset(
    {"read", "write", "truncate", "close", "commit", "create", "mkdir", "unlink", "rmdir", "rename"}
)


class SettingsError(ValueError):
    """A setting the hooks layer cannot accept (message names the setting)."""


def seconds(value: Any, what: str) -> float:
    """A duration setting in seconds: a Vega duration (``10ms``) or a number of seconds."""
    if isinstance(value, Duration):
        return value.seconds
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return float(value)
    raise SettingsError(f"{what} must be a duration such as 100ms, got {value!r}")


def _count(value: Any, what: str, minimum: int = 0) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value >= minimum:
        return value
    raise SettingsError(f"{what} must be an integer >= {minimum}, got {value!r}")


@dataclass(frozen=True)
class RetryPolicy:
    """How an after-hook that failed is retried: exponential backoff, capped."""

    max_attempts: int = 3
    base_s: float = 0.1
    factor: float = 2.0
    max_s: float = 5.0
    on: frozenset[str] = frozenset()  # failure kinds retried; empty = every failure

    def delay(self, attempt: int) -> float:
        """Seconds to wait before attempt number ``attempt + 1`` (attempt >= 1)."""
        return min(self.base_s * (self.factor ** (attempt - 1)), self.max_s)

    def retries(self, kind: str) -> bool:
        """Is a failure of ``kind`` (trap kind, ``deny`` or ``error``) worth another attempt?"""
        return not self.on or kind in self.on


@dataclass(frozen=True)
class BreakerPolicy:
    """Open the circuit after ``threshold`` consecutive failures, for ``reset_after_s``."""

    threshold: int = 5
    reset_after_s: float = 30.0


@dataclass(frozen=True)
class HookSettings:
    """Everything that governs one hook's runs (defaults documented in docs/hooks.md)."""

    budget: Budget = field(
        default_factory=lambda: Budget(DEFAULT_STEPS, DEFAULT_TIME_S, DEFAULT_MEMORY)
    )
    capabilities: tuple[str, ...] = ()
    failure_open: bool = False
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    breaker: BreakerPolicy = field(default_factory=BreakerPolicy)
    strategy: str = "restart"  # restart | stop | escalate: what repeated failure does


def _budget(data: Any) -> Budget:
    if not isinstance(data, Mapping):
        raise SettingsError("budget must be a block: budget { steps N  time D  memory S }")
    unknown = set(data) - {"steps", "time", "memory"}
    if unknown:
        raise SettingsError(f"unknown budget setting {sorted(unknown)[0]!r} (steps, time, memory)")
    steps = _count(data.get("steps", DEFAULT_STEPS), "budget steps", 1)
    time_s = seconds(data.get("time", DEFAULT_TIME_S), "budget time")
    memory = _count(data.get("memory", DEFAULT_MEMORY), "budget memory", 1)
    if steps > MAX_STEPS or time_s > MAX_TIME_S or memory > MAX_MEMORY:
        raise SettingsError(
            f"a hook budget may not exceed steps {MAX_STEPS:_}, time {MAX_TIME_S:g}s, "
            f"memory {MAX_MEMORY >> 20}mb"
        )
    return Budget(steps, time_s, memory)


def _retry(data: Any) -> RetryPolicy:
    if not isinstance(data, Mapping):
        raise SettingsError("retry must be a block: retry { max_attempts N  backoff ... }")
    unknown = set(data) - {"max_attempts", "backoff", "on"}
    if unknown:
        raise SettingsError(f"unknown retry setting {sorted(unknown)[0]!r}")
    policy = RetryPolicy(max_attempts=_count(data.get("max_attempts", 3), "retry max_attempts", 1))
    backoff = data.get("backoff")
    if backoff is not None:
        args = _backoff_args(backoff)
        if len(args) != 3:
            raise SettingsError("backoff must be exponential(base, factor, max)")
        base, factor, cap = args
        if not isinstance(factor, int | float) or isinstance(factor, bool) or factor < 1:
            raise SettingsError(f"backoff factor must be a number >= 1, got {factor!r}")
        policy = RetryPolicy(
            policy.max_attempts,
            seconds(base, "backoff base"),
            float(factor),
            seconds(cap, "backoff max"),
        )
    on = data.get("on", ())
    if not isinstance(on, list | tuple):
        raise SettingsError("retry on must be a list of failure kinds")
    return RetryPolicy(
        policy.max_attempts,
        policy.base_s,
        policy.factor,
        policy.max_s,
        frozenset(str(kind) for kind in on),
    )


def _backoff_args(backoff: Any) -> list[Any]:
    """The arguments of ``exponential(base, factor, max)`` from the compiler's plain
    data ``{"kind": "exponential", "base_s": ..., "factor": ..., "max_s": ...}``."""
    if isinstance(backoff, Mapping):
        kind = backoff.get("kind", "exponential")
        if kind != "exponential":
            raise SettingsError(f"unknown backoff {kind!r}: only exponential(base, factor, max)")
        return [backoff.get("base_s"), backoff.get("factor"), backoff.get("max_s")]
    if isinstance(backoff, list | tuple):
        return list(backoff)
    raise SettingsError("backoff must be exponential(base, factor, max)")


def _breaker(data: Any) -> BreakerPolicy:
    if not isinstance(data, Mapping):
        raise SettingsError("circuit_breaker must be a block: { threshold N  reset_after D }")
    unknown = set(data) - {"threshold", "reset_after"}
    if unknown:
        raise SettingsError(f"unknown circuit_breaker setting {sorted(unknown)[0]!r}")
    return BreakerPolicy(
        _count(data.get("threshold", 5), "circuit_breaker threshold", 1),
        seconds(data.get("reset_after", 30.0), "circuit_breaker reset_after"),
    )


def parse_settings(data: Mapping[str, Any]) -> HookSettings:
    """Typed settings from the compiler's plain data; raises :class:`SettingsError`."""
    settings = HookSettings()
    values: dict[str, Any] = {}
    for key, value in data.items():
        if key == "budget":
            values["budget"] = _budget(value)
        elif key == "capabilities":
            if not isinstance(value, list | tuple):
                raise SettingsError("capabilities must be a list: capabilities [fs::read]")
            values["capabilities"] = tuple(str(cap) for cap in value)
        elif key == "failure":
            if value not in ("closed", "open"):
                raise SettingsError(f"failure must be closed or open, got {value!r}")
            values["failure_open"] = value == "open"
        elif key == "retry":
            values["retry"] = _retry(value)
        elif key == "circuit_breaker":
            values["breaker"] = _breaker(value)
        elif key == "strategy":
            if value not in ("restart", "stop", "escalate"):
                raise SettingsError(f"strategy must be restart, stop or escalate, got {value!r}")
            values["strategy"] = value
        else:
            raise SettingsError(f"unknown hook setting {key!r}")
    return HookSettings(
        budget=values.get("budget", settings.budget),
        capabilities=values.get("capabilities", settings.capabilities),
        failure_open=values.get("failure_open", settings.failure_open),
        retry=values.get("retry", settings.retry),
        breaker=values.get("breaker", settings.breaker),
        strategy=values.get("strategy", settings.strategy),
    )
