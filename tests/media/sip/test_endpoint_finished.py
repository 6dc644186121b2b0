"""What a SipEndpoint still answers for a transaction that has finished, and handlers that take
requests at once instead of in a task of their own."""

from __future__ import annotations

import asyncio
import gc

import pytest

from media.sip.endpoint import Peer, ServerTransaction, SipEndpoint
from media.sip.message import SipRequest
from tests.media.sip.test_endpoint import (
    HOST,
    Desk,
    MakeNode,
    UdpPhone,
    answer_to,
    carrier_request,
    eventually,
    make_node,
    make_phone,
    our_request,
    phone,
)

__all__ = ["make_node", "make_phone", "phone"]  # fixtures used here by name

# 64*T1 is 0.64 s; the sweep may keep a record up to T1 longer.
SHORT_T1 = 0.01
AFTER_TIMER_J = 64 * SHORT_T1 + 3 * SHORT_T1


async def test_a_request_resent_after_timer_j_is_a_new_request_for_the_handler(
    make_node: MakeNode, phone: UdpPhone
) -> None:
    node = await make_node(t1=SHORT_T1)
    options = carrier_request("OPTIONS", via_port=phone.port)

    phone.send(options, node.udp)
    first = await phone.response()
    phone.send(options, node.udp)
    again = await phone.response()
    await asyncio.sleep(AFTER_TIMER_J)
    phone.send(options, node.udp)
    anew = await phone.response()

    assert bytes(first) == bytes(again)
    assert anew.status == 200
    assert node.desk.methods() == ["OPTIONS", "OPTIONS"]
    assert node.endpoint.stats.retransmissions_absorbed == 1


async def test_an_answered_invite_resent_after_the_accepted_state_is_a_new_call(
    make_node: MakeNode, phone: UdpPhone
) -> None:
    node = await make_node(t1=SHORT_T1)

    async def answer(tx: ServerTransaction) -> None:
        tx.reply(200, to_tag="desk200")

    node.desk.answer = answer
    invite = carrier_request("INVITE", via_port=phone.port, branch="z9hG4bKagain1")
    phone.send(invite, node.udp)
    assert (await phone.response()).status == 200
    phone.send(invite, node.udp)
    await phone.hears_nothing_for(0.05)
    await asyncio.sleep(AFTER_TIMER_J)
    phone.send(invite, node.udp)

    assert (await phone.response()).status == 200
    assert node.desk.methods() == ["INVITE", "INVITE"]


async def test_a_late_cancel_is_answered_with_the_2xx_tag_after_the_ua_let_the_invite_go(
    make_node: MakeNode, phone: UdpPhone
) -> None:
    node = await make_node()

    async def answer(tx: ServerTransaction) -> None:
        tx.reply(200, to_tag="desk200")

    node.desk.answer = answer
    phone.send(carrier_request("INVITE", via_port=phone.port, branch="z9hG4bKgone1"), node.udp)
    assert (await phone.response()).status == 200
    node.desk.requests.clear()  # the call is over and nothing holds its transaction
    gc.collect()

    phone.send(carrier_request("CANCEL", via_port=phone.port, branch="z9hG4bKgone1"), node.udp)
    cancel_ok = await phone.response()

    assert (cancel_ok.status, cancel_ok.cseq.method) == (200, "CANCEL")
    assert cancel_ok.to.tag == "desk200"
    await phone.hears_nothing_for(0.05)
    assert node.desk.cancels == []


async def test_a_retransmitted_final_to_our_finished_request_is_not_a_stray(
    make_node: MakeNode, phone: UdpPhone
) -> None:
    node = await make_node()
    options = our_request(node.endpoint, "OPTIONS", phone.port)
    asking = asyncio.create_task(node.endpoint.request(options, Peer("udp", HOST, phone.port)))
    await phone.request()
    ok = answer_to(options, 200, "OK")
    phone.send(ok, node.udp)
    assert (await asking).status == 200

    phone.send(ok, node.udp)  # Timer K is still running: absorbed
    await asyncio.sleep(0.05)

    assert node.desk.strays == []
    assert node.endpoint.stats.stray_responses == 0


async def test_our_request_cannot_be_sent_again_while_its_timer_k_runs(
    make_node: MakeNode, phone: UdpPhone
) -> None:
    node = await make_node()
    options = our_request(node.endpoint, "OPTIONS", phone.port)
    to_phone = Peer("udp", HOST, phone.port)
    asking = asyncio.create_task(node.endpoint.request(options, to_phone))
    await phone.request()
    phone.send(answer_to(options, 200, "OK"), node.udp)
    await asking

    with pytest.raises(ValueError, match="already running"):
        await node.endpoint.request(options, to_phone)


# Handlers that take requests at once


class FrontDesk(Desk):
    """Takes OPTIONS on the spot, leaves INVITE to on_request, and trips over INFO."""

    def __init__(self) -> None:
        super().__init__()
        self.taken: list[tuple[str, bool]] = []

    def take_request(self, tx: ServerTransaction) -> bool:
        method = tx.request.method
        if method == "INFO":
            raise RuntimeError("the desk cannot read this")
        if method != "OPTIONS":
            return False
        self.taken.append((method, asyncio.current_task() is None))
        tx.reply(200)
        return True


async def front_desk() -> tuple[SipEndpoint, FrontDesk, int]:
    desk = FrontDesk()
    endpoint = SipEndpoint(desk, public_host=HOST, t1=0.05)
    return endpoint, desk, await endpoint.listen("udp", HOST, 0)


async def test_a_handler_that_takes_a_request_answers_it_without_a_task(phone: UdpPhone) -> None:
    endpoint, desk, port = await front_desk()
    try:
        phone.send(carrier_request("OPTIONS", via_port=phone.port), port)
        assert (await phone.response()).status == 200
        assert desk.taken == [("OPTIONS", True)]
        assert desk.requests == []  # on_request never ran
    finally:
        await endpoint.close()


async def test_a_request_the_handler_declines_goes_to_on_request(phone: UdpPhone) -> None:
    endpoint, desk, port = await front_desk()
    try:
        phone.send(carrier_request("INVITE", via_port=phone.port), port)
        assert (await phone.response()).status == 200
        assert desk.methods() == ["INVITE"]
        assert desk.taken == []
    finally:
        await endpoint.close()


async def test_a_handler_that_fails_to_take_a_request_answers_500_and_serves_on(
    phone: UdpPhone,
) -> None:
    endpoint, desk, port = await front_desk()
    try:
        phone.send(carrier_request("INFO", via_port=phone.port), port)
        assert (await phone.response()).status == 500
        phone.send(carrier_request("OPTIONS", via_port=phone.port), port)
        assert (await phone.response()).status == 200
        assert endpoint.stats.handler_errors == 1
        assert desk.requests == []
    finally:
        await endpoint.close()


async def test_an_ack_for_a_2xx_is_taken_at_once_too(phone: UdpPhone) -> None:
    endpoint, desk, port = await front_desk()
    seen: list[SipRequest] = []

    def take_request(tx: ServerTransaction) -> bool:
        seen.append(tx.request)
        return tx.request.method == "ACK"

    desk.take_request = take_request  # type: ignore[method-assign]
    try:
        phone.send(carrier_request("INVITE", via_port=phone.port, call_id="taken-1"), port)
        ok = await phone.response()
        phone.send(
            carrier_request("ACK", via_port=phone.port, call_id="taken-1", to_tag=ok.to.tag),
            port,
        )
        await eventually(lambda: len(seen) == 2)
        assert [r.method for r in seen] == ["INVITE", "ACK"]
        assert desk.methods() == ["INVITE"]  # the ACK never needed a task
    finally:
        await endpoint.close()
