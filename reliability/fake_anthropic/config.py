"""What the fake can do to a request (``Fault``, ``RequestOutcome``) and how it is set
(``FakeConfig``).

A config is checked once, when it is made: the server, its ``/_fake/config`` endpoint and the
``fake_anthropic`` command all build ``FakeConfig`` and rely on its checks. The command's text
forms of rates and latency are read here too (``parse_rates``, ``parse_latency``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Fault(StrEnum):
    """What the fake does with a request: keys of ``fault_rates``, entries of ``script()``."""

    OK = "ok"
    OVERLOADED = "overloaded"  # 529 overloaded_error
    RATE_LIMIT = "rate_limit"  # 429 rate_limit_error with retry-after
    SPEND_LIMIT = "spend_limit"  # 429 rate_limit_error: the spend limit is reached
    SERVER_ERROR = "server_error"  # 500 api_error
    UNAVAILABLE = "unavailable"  # 503 api_error
    BAD_REQUEST = "bad_request"  # 400 invalid_request_error
    AUTH = "auth"  # 401 authentication_error
    HANG = "hang"  # accepts the request, sends nothing for hang_seconds, closes
    RESET = "reset"  # sends the head and part of the body, then a TCP RST
    TRICKLE = "trickle"  # a valid reply, a few bytes at a time
    MALFORMED = "malformed"  # 200 whose body is not valid JSON


class RequestOutcome(StrEnum):
    """What the fake chose itself, not injected: recorded in ``RequestRecord.fault`` beside
    ``Fault`` values."""

    RPM_LIMITED = "rpm_limit"  # 429: the fake's own requests-per-window limit
    BUCKET_LIMITED = "bucket_limit"  # 429: a rate-limit bucket is short (enforce_rate_limits)
    MISSING_API_KEY = "missing_api_key"  # 401: no x-api-key or authorization header
    INVALID_REQUEST = "invalid_request"  # 400: not a valid Messages request
    RESPONDER_FAILED = "responder_failed"  # 500: the responder raised or returned junk
    NOT_FOUND = "not_found"  # 404: not an API route


@dataclass(frozen=True, kw_only=True)
class FakeConfig:
    """How the fake behaves. Immutable: change it with ``FakeAnthropic.configure()``."""

    fault_rates: Mapping[str, float] = field(default_factory=dict)
    """Fault kind -> probability per request; the rest is ``ok``. The sum must be <= 1."""
    model_fault_rates: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    """Model name -> fault rates that replace ``fault_rates`` for requests naming that model
    (e.g. one model overloaded while another answers); checked like ``fault_rates``."""
    latency_s: float | tuple[float, float] = 0.0
    """Delay before a 200 reply: fixed, or uniform between (min, max)."""
    rpm_limit: int | None = None
    rpm_window_s: float = 60.0
    retry_after_s: float = 1.0
    """Sent in retry-after by the ``rate_limit`` fault; fractional values add retry-after-ms."""
    hang_seconds: float = 600.0
    trickle_delay_s: float = 0.05
    trickle_chunk_bytes: int = 16
    input_tokens_limit: int = 400_000
    output_tokens_limit: int = 80_000
    """Advertised in the token rate-limit headers; enforced with ``enforce_rate_limits``."""
    enforce_rate_limits: bool = False
    """Enforce ``rpm_limit``, ``input_tokens_limit`` and ``output_tokens_limit`` per
    ``rpm_window_s`` as the API does: token buckets, output charged at ``max_tokens`` when a
    request starts and corrected when it ends (``ratelimits``)."""
    require_api_key: bool = True
    seed: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "fault_rates", _validated_rates(self.fault_rates))
        object.__setattr__(
            self, "model_fault_rates", _validated_model_rates(self.model_fault_rates)
        )
        object.__setattr__(self, "latency_s", _validated_latency(self.latency_s))
        if self.rpm_limit is not None:
            _check_number("rpm_limit", self.rpm_limit, minimum=1, integer=True)
        _check_number("rpm_window_s", self.rpm_window_s, minimum=0, exclusive=True)
        _check_number("retry_after_s", self.retry_after_s, minimum=0)
        _check_number("hang_seconds", self.hang_seconds, minimum=0)
        _check_number("trickle_delay_s", self.trickle_delay_s, minimum=0)
        _check_number("trickle_chunk_bytes", self.trickle_chunk_bytes, minimum=1, integer=True)
        _check_number("input_tokens_limit", self.input_tokens_limit, minimum=1, integer=True)
        _check_number("output_tokens_limit", self.output_tokens_limit, minimum=1, integer=True)
        if not isinstance(self.enforce_rate_limits, bool):
            raise ValueError("enforce_rate_limits must be true or false")
        if not isinstance(self.require_api_key, bool):
            raise ValueError("require_api_key must be true or false")
        if self.seed is not None and (
            isinstance(self.seed, bool) or not isinstance(self.seed, int)
        ):
            raise ValueError(f"seed must be an integer or None, got {self.seed!r}")

    def with_changes(self, **changes: Any) -> FakeConfig:
        known = {config_field.name for config_field in dataclasses.fields(self)}
        if unknown := sorted(set(changes) - known):
            raise ValueError(f"unknown config field(s): {', '.join(unknown)}")
        return dataclasses.replace(self, **changes)

    def rates_for(self, model: str | None) -> Mapping[str, float]:
        """The fault rates for a request naming ``model``."""
        if model is not None and model in self.model_fault_rates:
            return self.model_fault_rates[model]
        return self.fault_rates

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def fault_kind(value: object) -> Fault:
    """The ``Fault`` named by ``value``, or a ValueError that lists the valid names."""
    try:
        return Fault(value)
    except ValueError:
        valid = ", ".join(kind.value for kind in Fault)
        raise ValueError(f"unknown fault kind {value!r}; expected one of: {valid}") from None


def parse_rates(pairs: Iterable[str]) -> dict[str, float]:
    """``fault_rates`` from ``KIND=PROBABILITY`` texts; ``FakeConfig`` checks kinds and sums."""
    rates: dict[str, float] = {}
    for pair in pairs:
        kind, separator, probability = pair.partition("=")
        if not separator:
            raise ValueError(f"--rate expects KIND=PROBABILITY, got {pair!r}")
        try:
            rates[kind.strip()] = float(probability)
        except ValueError:
            raise ValueError(f"--rate {pair!r}: {probability!r} is not a number") from None
    return rates


def parse_model_faults(specs: Iterable[str]) -> dict[str, dict[str, float]]:
    """``model_fault_rates`` from ``MODEL=KIND:PROBABILITY[,KIND:PROBABILITY...]`` texts;
    ``FakeConfig`` checks kinds and sums. ``MODEL=`` alone: that model gets no faults."""
    model_rates: dict[str, dict[str, float]] = {}
    for spec in specs:
        model, separator, pairs = spec.partition("=")
        model = model.strip()
        if not separator or not model:
            raise ValueError(
                f"--model-faults expects MODEL=KIND:PROBABILITY[,KIND:PROBABILITY...], got {spec!r}"
            )
        if model in model_rates:
            raise ValueError(f"--model-faults names {model!r} twice")
        rates: dict[str, float] = {}
        for pair in filter(None, (part.strip() for part in pairs.split(","))):
            kind, colon, probability = pair.partition(":")
            if not colon:
                raise ValueError(
                    f"--model-faults {spec!r}: expected KIND:PROBABILITY, got {pair!r}"
                )
            try:
                rates[kind.strip()] = float(probability)
            except ValueError:
                raise ValueError(
                    f"--model-faults {spec!r}: {probability!r} is not a number"
                ) from None
        model_rates[model] = rates
    return model_rates


def parse_latency(text: str | None) -> float | tuple[float, float]:
    """``latency_s`` from ``SECONDS`` or ``MIN:MAX``; None is no delay."""
    if text is None:
        return 0.0
    try:
        low, separator, high = text.partition(":")
        return (float(low), float(high)) if separator else float(text)
    except ValueError:
        raise ValueError(f"--latency expects SECONDS or MIN:MAX, got {text!r}") from None


def _check_number(
    name: str,
    value: object,
    *,
    minimum: float,
    exclusive: bool = False,
    integer: bool = False,
) -> None:
    kinds: tuple[type, ...] = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds):
        raise ValueError(f"{name} must be {'an integer' if integer else 'a number'}, got {value!r}")
    if value < minimum or (exclusive and value == minimum):
        raise ValueError(f"{name} must be {'>' if exclusive else '>='} {minimum}, got {value!r}")


def _validated_rates(rates: Mapping[str, float], *, name: str = "fault_rates") -> dict[str, float]:
    if not isinstance(rates, Mapping):
        raise ValueError(f"{name} must be a mapping of fault kind to probability")
    validated: dict[str, float] = {}
    for kind, rate in rates.items():
        _check_number(f"{name}[{kind!r}]", rate, minimum=0)
        if rate > 1:
            raise ValueError(f"{name}[{kind!r}] must be <= 1, got {rate!r}")
        try:
            validated[fault_kind(kind)] = float(rate)
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}") from None
    if sum(validated.values()) > 1 + 1e-9:
        raise ValueError(
            f"{name}: fault rates must sum to at most 1, got {sum(validated.values()):g}"
        )
    return validated


def _validated_model_rates(
    model_rates: Mapping[str, Mapping[str, float]],
) -> dict[str, dict[str, float]]:
    if not isinstance(model_rates, Mapping):
        raise ValueError("model_fault_rates must be a mapping of model name to fault rates")
    validated: dict[str, dict[str, float]] = {}
    for model, rates in model_rates.items():
        if not isinstance(model, str) or not model.strip():
            raise ValueError(f"model_fault_rates: a model name must be non-empty, got {model!r}")
        validated[model] = _validated_rates(rates, name=f"model_fault_rates[{model!r}]")
    return validated


def _validated_latency(latency: object) -> float | tuple[float, float]:
    if isinstance(latency, list | tuple):
        if len(latency) != 2:
            raise ValueError(f"latency_s range must be (min, max), got {latency!r}")
        low, high = latency
        _check_number("latency_s minimum", low, minimum=0)
        _check_number("latency_s maximum", high, minimum=low)
        return (float(low), float(high))
    _check_number("latency_s", latency, minimum=0)
    return float(latency)  # type: ignore[arg-type]
