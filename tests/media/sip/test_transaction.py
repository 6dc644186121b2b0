"""RFC 3261 §17 transactions driven by a fake clock: what goes out, what the TU sees, and when."""

from __future__ import annotations

import pytest

from media.sip.message import SipRequest, SipResponse, build_response, parse_message
from media.sip.transaction import (
    Action,
    Deliver,
    FinishedTransactions,
    InviteClientTransaction,
    InviteServerTransaction,
    NonInviteClientTransaction,
    NonInviteServerTransaction,
    Send,
    State,
    Terminated,
    TimedOut,
    TransactionStateError,
    cancel_target_key,
    client_key,
    server_key,
)

BRANCH = "z9hG4bK776asdhds"
Transaction = (
    InviteClientTransaction
    | NonInviteClientTransaction
    | InviteServerTransaction
    | NonInviteServerTransaction
)


def request(
    method: str = "INVITE",
    *,
    branch: str = BRANCH,
    sent_by: str = "pc33.atlanta.example.com",
) -> SipRequest:
    return SipRequest.create(
        method,
        "sip:bob@biloxi.example.com",
        [
            ("Via", f"SIP/2.0/UDP {sent_by};branch={branch}"),
            ("Via", "SIP/2.0/UDP proxy.atlanta.example.com;branch=z9hG4bKproxy1"),
            ("Max-Forwards", "70"),
            ("Route", "<sip:edge.biloxi.example.com;lr>"),
            ("To", "Bob <sip:bob@biloxi.example.com>"),
            ("From", "Alice <sip:alice@atlanta.example.com>;tag=1928301774"),
            ("Call-ID", "a84b4c76e66710@pc33.atlanta.example.com"),
            ("CSeq", f"314159 {method}"),
            ("Contact", "<sip:alice@pc33.atlanta.example.com>"),
        ],
    )


def response(req: SipRequest, status: int, reason: str) -> SipResponse:
    """A response as it arrives from the network."""
    message = parse_message(bytes(build_response(req, status, reason, to_tag="a6c85cf")))
    assert isinstance(message, SipResponse)
    return message


def ack_for(invite: SipRequest, final: SipResponse) -> SipRequest:
    """The ACK our own INVITE client transaction sends for a non-2xx final."""
    client = InviteClientTransaction(invite, reliable=True)
    client.start(0.0)
    sent = client.on_response(final, 0.0)[0]
    assert isinstance(sent, Send)
    assert isinstance(sent.message, SipRequest)
    return sent.message


def run_until(tx: Transaction, end: float) -> list[tuple[float, Action]]:
    """Advance a fake clock from deadline to deadline up to `end`, collecting what fires."""
    fired: list[tuple[float, Action]] = []
    while (deadline := tx.next_deadline()) is not None and deadline <= end:
        fired += [(deadline, action) for action in tx.on_timer(deadline)]
    return fired


def send_times(fired: list[tuple[float, Action]]) -> list[float]:
    return [at for at, action in fired if isinstance(action, Send)]


# INVITE client transaction


def test_invite_over_udp_is_retransmitted_at_doubling_intervals_until_timer_b_times_out() -> None:
    invite = request()
    tx = InviteClientTransaction(invite, reliable=False)

    assert tx.start(0.0) == [Send(invite)]
    fired = run_until(tx, 100.0)

    assert send_times(fired) == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert fired[-2:] == [(32.0, TimedOut("B")), (32.0, Terminated("timer B"))]
    assert tx.state is State.TERMINATED
    assert tx.next_deadline() is None


def test_ringing_stops_invite_retransmission_and_the_timeout() -> None:
    invite = request()
    tx = InviteClientTransaction(invite, reliable=False)
    tx.start(0.0)
    run_until(tx, 1.0)
    ringing = response(invite, 180, "Ringing")

    assert tx.on_response(ringing, 1.0) == [Deliver(ringing)]
    assert tx.state is State.PROCEEDING
    assert run_until(tx, 100.0) == []


def test_busy_is_acknowledged_once_and_delivered_once() -> None:
    invite = request()
    tx = InviteClientTransaction(invite, reliable=False)
    tx.start(0.0)
    busy = response(invite, 486, "Busy Here")

    actions = tx.on_response(busy, 0.2)

    assert len(actions) == 2
    assert actions[1] == Deliver(busy)
    assert isinstance(actions[0], Send)
    ack = actions[0].message
    assert isinstance(ack, SipRequest)
    assert ack.method == "ACK"
    assert str(ack.uri) == str(invite.uri)
    assert ack.vias == (invite.via,)
    assert ack.header("From") == invite.header("From")
    assert ack.to.tag == "a6c85cf"
    assert ack.call_id == invite.call_id
    assert (ack.cseq.sequence, ack.cseq.method) == (314159, "ACK")
    assert ack.header_values("Route") == invite.header_values("Route")
    assert tx.state is State.COMPLETED


def test_retransmitted_busy_gets_another_ack_but_is_not_delivered_again() -> None:
    invite = request()
    tx = InviteClientTransaction(invite, reliable=False)
    tx.start(0.0)
    first = tx.on_response(response(invite, 486, "Busy Here"), 0.2)

    again = tx.on_response(response(invite, 486, "Busy Here"), 0.9)

    assert again == [first[0]]
    assert run_until(tx, 100.0) == [(32.2, Terminated("timer D"))]


def test_invite_over_tcp_is_sent_once_and_terminates_on_a_final_at_once() -> None:
    invite = request()
    tx = InviteClientTransaction(invite, reliable=True)
    tx.start(0.0)

    assert tx.next_deadline() == 32.0
    actions = tx.on_response(response(invite, 486, "Busy Here"), 1.0)

    assert [type(a) for a in actions] == [Send, Deliver, Terminated]
    assert tx.state is State.TERMINATED


def test_a_2xx_is_delivered_and_ends_the_invite_client_transaction() -> None:
    invite = request()
    tx = InviteClientTransaction(invite, reliable=False)
    tx.start(0.0)
    ok = response(invite, 200, "OK")

    assert tx.on_response(ok, 0.3) == [Deliver(ok), Terminated("2xx received")]
    assert tx.on_response(ok, 0.8) == []
    assert tx.next_deadline() is None


# Non-INVITE client transaction


def test_non_invite_retransmission_interval_is_capped_at_t2_until_timer_f() -> None:
    tx = NonInviteClientTransaction(request("OPTIONS"), reliable=False)
    tx.start(0.0)

    fired = run_until(tx, 100.0)

    assert send_times(fired) == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert fired[-2:] == [(32.0, TimedOut("F")), (32.0, Terminated("timer F"))]


def test_non_invite_in_proceeding_is_retransmitted_every_t2() -> None:
    options = request("OPTIONS")
    tx = NonInviteClientTransaction(options, reliable=False)
    tx.start(0.0)
    trying = response(options, 100, "Trying")

    assert tx.on_response(trying, 0.2) == [Deliver(trying)]
    fired = run_until(tx, 100.0)

    assert send_times(fired) == [0.5, 4.5, 8.5, 12.5, 16.5, 20.5, 24.5, 28.5]
    assert fired[-1] == (32.0, Terminated("timer F"))


def test_non_invite_final_is_delivered_once_and_timer_k_terminates() -> None:
    options = request("OPTIONS")
    tx = NonInviteClientTransaction(options, reliable=False, t4=5.0)
    tx.start(0.0)
    ok = response(options, 200, "OK")

    assert tx.on_response(ok, 1.0) == [Deliver(ok)]
    assert tx.on_response(ok, 2.0) == []
    assert run_until(tx, 100.0) == [(6.0, Terminated("timer K"))]


def test_non_invite_over_tcp_terminates_on_the_final_at_once() -> None:
    options = request("OPTIONS")
    tx = NonInviteClientTransaction(options, reliable=True)
    tx.start(0.0)
    ok = response(options, 200, "OK")

    assert tx.next_deadline() == 32.0
    assert [type(a) for a in tx.on_response(ok, 1.0)] == [Deliver, Terminated]


def test_client_transaction_refuses_a_request_without_a_3261_branch() -> None:
    with pytest.raises(ValueError, match="z9hG4bK"):
        InviteClientTransaction(request(branch="oldbranch1"), reliable=False)


# INVITE server transaction


def test_retransmitted_invite_gets_the_last_provisional_again() -> None:
    invite = request()
    tx = InviteServerTransaction(invite, reliable=False)
    assert tx.start(0.0) == [Deliver(invite)]

    assert tx.on_request(invite, 0.1) == []
    tx.send_response(build_response(invite, 100, "Trying"), 0.2)
    ringing = build_response(invite, 180, "Ringing", to_tag="a6c85cf")
    assert tx.send_response(ringing, 0.3) == [Send(ringing)]
    assert tx.on_request(invite, 0.6) == [Send(ringing)]


def test_busy_is_retransmitted_until_the_ack_and_timer_i_then_terminates() -> None:
    invite = request()
    tx = InviteServerTransaction(invite, reliable=False, t4=5.0)
    tx.start(0.0)
    busy = build_response(invite, 486, "Busy Here", to_tag="a6c85cf")
    assert tx.send_response(busy, 0.0) == [Send(busy)]

    assert run_until(tx, 2.0) == [(0.5, Send(busy)), (1.5, Send(busy))]
    ack = ack_for(invite, busy)
    assert tx.on_request(ack, 2.0) == []
    assert tx.state is State.CONFIRMED
    assert tx.on_request(ack, 3.0) == []
    assert tx.on_request(invite, 3.0) == []
    assert run_until(tx, 100.0) == [(7.0, Terminated("timer I"))]


def test_timer_h_times_out_a_final_response_that_is_never_acknowledged() -> None:
    invite = request()
    tx = InviteServerTransaction(invite, reliable=False)
    tx.start(0.0)
    tx.send_response(build_response(invite, 486, "Busy Here", to_tag="a6c85cf"), 0.0)

    fired = run_until(tx, 100.0)

    assert send_times(fired) == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert fired[-2:] == [(32.0, TimedOut("H")), (32.0, Terminated("timer H"))]


def test_retransmitted_invite_after_a_final_gets_the_final_again() -> None:
    invite = request()
    tx = InviteServerTransaction(invite, reliable=False)
    tx.start(0.0)
    busy = build_response(invite, 486, "Busy Here", to_tag="a6c85cf")
    tx.send_response(busy, 0.0)

    assert tx.on_request(invite, 0.2) == [Send(busy)]


def test_sending_a_2xx_ends_the_invite_server_transaction() -> None:
    invite = request()
    tx = InviteServerTransaction(invite, reliable=False)
    tx.start(0.0)
    ok = build_response(invite, 200, "OK", to_tag="a6c85cf")

    assert tx.send_response(ok, 0.1) == [Send(ok), Terminated("2xx sent")]
    with pytest.raises(TransactionStateError):
        tx.send_response(ok, 0.2)


def test_invite_server_over_tcp_never_retransmits_and_ends_on_the_ack() -> None:
    invite = request()
    tx = InviteServerTransaction(invite, reliable=True)
    tx.start(0.0)
    busy = build_response(invite, 486, "Busy Here", to_tag="a6c85cf")
    tx.send_response(busy, 0.0)

    assert tx.next_deadline() == 32.0
    ack = ack_for(invite, busy)
    assert [type(a) for a in tx.on_request(ack, 1.0)] == [Terminated]


# Non-INVITE server transaction


def test_retransmitted_request_is_absorbed_and_answered_with_the_last_response() -> None:
    options = request("OPTIONS")
    tx = NonInviteServerTransaction(options, reliable=False)
    assert tx.start(0.0) == [Deliver(options)]

    assert tx.on_request(options, 0.5) == []
    ok = build_response(options, 200, "OK", to_tag="a6c85cf")
    assert tx.send_response(ok, 1.0) == [Send(ok)]
    assert tx.on_request(options, 1.5) == [Send(ok)]
    assert run_until(tx, 100.0) == [(33.0, Terminated("timer J"))]


def test_non_invite_server_over_tcp_terminates_when_the_final_is_sent() -> None:
    options = request("OPTIONS")
    tx = NonInviteServerTransaction(options, reliable=True)
    tx.start(0.0)
    ok = build_response(options, 200, "OK", to_tag="a6c85cf")

    assert [type(a) for a in tx.send_response(ok, 1.0)] == [Send, Terminated]


# Matching


def test_retransmitted_invite_and_its_non_2xx_ack_match_the_invite_server_transaction() -> None:
    invite = request()
    retransmitted = parse_message(bytes(invite))
    assert isinstance(retransmitted, SipRequest)
    busy = build_response(invite, 486, "Busy Here", to_tag="a6c85cf")
    ack = ack_for(invite, busy)

    assert server_key(retransmitted) == server_key(invite)
    assert server_key(ack) == server_key(invite)
    assert server_key(request(sent_by="elsewhere.example.com")) != server_key(invite)


def test_cancel_is_its_own_transaction_and_points_at_the_invite() -> None:
    invite, cancel = request(), request("CANCEL")

    assert server_key(cancel) != server_key(invite)
    assert cancel_target_key(cancel) == server_key(invite)


def test_rfc2543_requests_match_by_the_old_tuple() -> None:
    invite = request(branch="oldbranch1")
    busy = build_response(invite, 486, "Busy Here", to_tag="a6c85cf")
    ack = SipRequest.create(
        "ACK",
        str(invite.uri),
        [
            ("Via", "SIP/2.0/UDP pc33.atlanta.example.com;branch=oldbranch1"),
            ("From", invite.header("From") or ""),
            ("To", busy.header("To") or ""),
            ("Call-ID", invite.call_id),
            ("CSeq", "314159 ACK"),
        ],
    )

    assert server_key(ack) == server_key(invite)
    assert cancel_target_key(request("CANCEL", branch="oldbranch1")) == server_key(invite)
    assert server_key(request("BYE", branch="oldbranch1")) != server_key(invite)


def test_a_bare_magic_cookie_is_not_trusted_as_a_unique_branch() -> None:
    invite = request(branch="z9hG4bK")
    other = SipRequest.create(
        "INVITE",
        "sip:carol@biloxi.example.com",
        [(name, value) for name, value in invite.headers if name != "Content-Length"],
    )

    assert server_key(other) != server_key(invite)


def test_responses_match_the_client_transaction_by_branch_and_cseq_method() -> None:
    invite = request()
    tx = InviteClientTransaction(invite, reliable=False)
    cancel = request("CANCEL")

    assert client_key(response(invite, 180, "Ringing")) == tx.key
    assert client_key(response(cancel, 200, "OK")) != tx.key
    assert client_key(response(request(branch="z9hG4bKother"), 180, "Ringing")) != tx.key


# Finished transactions waiting out a timer


def test_finished_transactions_are_forgotten_in_order_once_their_lifetime_is_over() -> None:
    finished = FinishedTransactions[str, str](32.0)
    assert finished.add("bye-1", "200 for the first BYE", 0.0) == 32.0
    assert finished.add("bye-2", "200 for the second BYE", 1.0) == 33.0

    assert finished.expire(31.9) == 32.0
    assert finished.get("bye-1") == "200 for the first BYE"
    assert finished.expire(32.0) == 33.0
    assert "bye-1" not in finished
    assert finished.get("bye-2") == "200 for the second BYE"
    assert finished.expire(40.0) is None
    assert len(finished) == 0


def test_a_finished_transaction_added_again_lives_from_its_latest_addition() -> None:
    finished = FinishedTransactions[str, str](5.0)
    finished.add("options", "first", 0.0)
    finished.add("options", "second", 3.0)

    assert finished.expire(5.0) == 8.0
    assert finished.get("options") == "second"
    assert finished.expire(8.0) is None
    assert finished.get("options") is None
