"""Erlang C: the chance a caller waits, the mean wait and the staff a service level needs, plus
the ACD's estimated wait time (EWT) built on them."""

from __future__ import annotations

import math


def erlang_b(n: int, a: float) -> float:
    """Blocking probability with `n` servers and `a` erlangs of offered load."""
    if n < 0 or a < 0:
        raise ValueError("agents and load cannot be negative")
    b = 1.0
    for k in range(1, n + 1):  # the stable recursion, no factorials
        b = a * b / (k + a * b)
    return b


def erlang_c(n: int, a: float) -> float:
    """Probability that a call has to wait with `n` agents and `a` erlangs (1.0 when a ≥ n)."""
    if n <= 0 or a >= n:
        return 1.0
    if a <= 0:
        return 0.0
    b = erlang_b(n, a)
    return n * b / (n - a * (1 - b))


def mean_wait_seconds(n: int, a: float, aht_seconds: float) -> float:
    """Average speed of answer over all calls; infinite when the load meets the staff."""
    if n <= 0 or a >= n:
        return math.inf
    return erlang_c(n, a) * aht_seconds / (n - a)


def service_level(n: int, a: float, aht_seconds: float, target_seconds: float) -> float:
    """Share of calls answered within `target_seconds`."""
    if n <= 0 or a >= n:
        return 0.0
    return 1.0 - erlang_c(n, a) * math.exp(-(n - a) * target_seconds / aht_seconds)


def agents_for_service_level(
    arrivals_per_second: float,
    aht_seconds: float,
    target_seconds: float,
    target_share: float = 0.8,
    max_agents: int = 100_000,
) -> int:
    """Fewest agents answering `target_share` of calls within `target_seconds`."""
    if arrivals_per_second < 0 or aht_seconds <= 0 or target_seconds < 0:
        raise ValueError("rates and times must be non-negative, handle time positive")
    if not 0 < target_share < 1:
        raise ValueError("target_share must be between 0 and 1")
    a = arrivals_per_second * aht_seconds
    if a == 0:
        return 0
    n = max(1, math.floor(a) + 1)
    while service_level(n, a, aht_seconds, target_seconds) < target_share:
        n += 1
        if n > max_agents:
            raise ValueError(f"more than {max_agents} agents would be needed")
    return n


def positional_wait_seconds(position: int, aht_seconds: float, staffed: int) -> float:
    """Wait for the caller at `position`: one agent frees up every AHT / staffed seconds."""
    return position * aht_seconds / max(1, staffed)


def estimated_wait_seconds(
    *,
    arrivals_per_second: float | None,
    aht_seconds: float,
    staffed: int,
    position: int,
) -> float:
    """EWT for a call arriving at `position`: Erlang C's mean wait from the live arrival rate
    and handle time; where there is no rate yet or the load meets the staff, the positional
    estimate."""
    if arrivals_per_second is not None and staffed > 0:
        a = arrivals_per_second * aht_seconds
        if a < staffed:
            return mean_wait_seconds(staffed, a, aht_seconds)
    return positional_wait_seconds(position, aht_seconds, staffed)
