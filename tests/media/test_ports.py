"""The RTP port range: even ports with their RTCP neighbour inside the range, none handed out
twice, a clear error when the node is full, and released ports reused last."""

from __future__ import annotations

import pytest

from media.ports import NoFreePorts, PortRange


def test_every_allocated_port_is_even_and_its_rtcp_port_is_inside_the_range() -> None:
    ports = PortRange(10001, 10010)
    allocated = [ports.allocate() for _ in range(ports.capacity)]
    assert allocated == [10002, 10004, 10006, 10008]
    assert all(port % 2 == 0 and port + 1 <= 10010 for port in allocated)


def test_an_even_upper_bound_is_not_handed_out_without_its_rtcp_port() -> None:
    ports = PortRange(10000, 10004)
    assert [ports.allocate(), ports.allocate()] == [10000, 10002]
    with pytest.raises(NoFreePorts):
        ports.allocate()


def test_a_full_range_refuses_another_leg_until_a_port_is_released() -> None:
    ports = PortRange(10000, 10003)
    first, second = ports.allocate(), ports.allocate()
    assert ports.in_use == 2
    with pytest.raises(NoFreePorts):
        ports.allocate()
    ports.release(first)
    assert ports.in_use == 1
    assert ports.allocate() == first
    assert second != first


def test_a_released_port_is_reused_only_after_every_other_free_port() -> None:
    ports = PortRange(10000, 10009)  # five pairs
    first = ports.allocate()
    ports.release(first)
    following = [ports.allocate() for _ in range(4)]
    assert first not in following
    assert ports.allocate() == first


def test_releasing_a_port_that_was_not_allocated_is_refused() -> None:
    ports = PortRange(10000, 10009)
    port = ports.allocate()
    ports.release(port)
    with pytest.raises(ValueError, match="not allocated"):
        ports.release(port)
    with pytest.raises(ValueError, match="not allocated"):
        ports.release(10003)
    assert ports.in_use == 0


@pytest.mark.parametrize(("low", "high"), [(0, 100), (100, 99), (65535, 65535), (10001, 10002)])
def test_a_range_without_a_usable_pair_is_refused(low: int, high: int) -> None:
    with pytest.raises(ValueError, match="port range"):
        PortRange(low, high)
