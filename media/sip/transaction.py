"""RFC 3261 §17 transactions as pure state machines: inputs and the time in, actions out.

Every transaction is driven the same way. `start(now)` is called once when it is created; then
`on_response`/`on_request` for each matching message, `send_response` for what the TU answers
(server transactions), and `on_timer(now)` whenever `next_deadline()` has passed. Each call
returns a list of actions for the transport to carry out in order: `Send` to the network,
`Deliver` to the TU, `TimedOut` to tell the TU the transaction failed, and `Terminated` when the
transport may forget the transaction. Timers are deadlines held inside the transaction, so the
transport needs one timer per transaction and never a cancel; a late `on_timer` fires the missed
timers in order, each as of its own deadline, which keeps retransmission schedules exact.

Over a reliable transport Timers A, E and G never run, and D, I, J and K are zero: the
transaction terminates in the same call that would have started them.

RFC 6026 "Accepted" is not implemented. An INVITE client transaction terminates on a 2xx, which it
delivers; 2xx retransmissions and forked 2xx then match no transaction and go to the dialog
layer, which sends the ACK for each. An INVITE server transaction terminates once the TU sends a
2xx; retransmitting that 2xx until its ACK arrives, and absorbing the ACK, is the dialog layer's
job (RFC 3261 §13.3.1.4). Transport errors (§17.1.4) are not modelled yet.

`FinishedTransactions` is what a transport may keep instead of a transaction whose only business
left is waiting out Timer J or K (or RFC 6026's Accepted state): a small record per key, expired
in order, with one clock for all of them.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

from media.sip.message import SipRequest, SipResponse

MAGIC_COOKIE = "z9hG4bK"
T1 = 0.5
T2 = 4.0
T4 = 5.0
# Timer D is "at least 32 s" for unreliable transports, not a multiple of T1 (§17.1.1.2).
TIMER_D = 32.0

ClientKey = tuple[str, str]
ServerKey = tuple[Hashable, ...]

_K = TypeVar("_K", bound=Hashable)
_V = TypeVar("_V")


@dataclass(frozen=True)
class Send:
    message: SipRequest | SipResponse


@dataclass(frozen=True)
class Deliver:
    message: SipRequest | SipResponse


@dataclass(frozen=True)
class TimedOut:
    """The transaction failed for want of an answer (Timer B, F or H)."""

    timer: str


@dataclass(frozen=True)
class Terminated:
    reason: str


Action = Send | Deliver | TimedOut | Terminated


class State(enum.Enum):
    CALLING = "calling"
    TRYING = "trying"
    PROCEEDING = "proceeding"
    COMPLETED = "completed"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


class TransactionStateError(RuntimeError):
    """The TU asked for something the transaction's state does not allow."""


def client_key(message: SipRequest | SipResponse) -> ClientKey:
    """Match a response to the client transaction that sent its request (§17.1.3)."""
    method = message.cseq.method if isinstance(message, SipResponse) else message.method
    return (message.via.branch or "", method)


def server_key(request: SipRequest) -> ServerKey:
    """Match a request to its server transaction (§17.2.3); an ACK maps to its INVITE."""
    return _server_key(request, "INVITE" if request.method == "ACK" else request.method)


def cancel_target_key(cancel: SipRequest) -> ServerKey:
    """The key of the INVITE server transaction that a CANCEL asks to cancel (§9.2)."""
    return _server_key(cancel, "INVITE")


def _is_rfc3261_branch(branch: str | None) -> bool:
    # A bare cookie is not unique (RFC 4475 §3.2.1 badbranch), so it counts as an old branch.
    return branch is not None and branch.startswith(MAGIC_COOKIE) and branch != MAGIC_COOKIE


def _server_key(request: SipRequest, method: str) -> ServerKey:
    via = request.via
    if _is_rfc3261_branch(via.branch):
        return (via.branch, via.host.lower(), via.port, method)
    # RFC 2543 matching. The To tag is left out: an ACK carries the tag our response added,
    # which the INVITE lacked, and Call-ID, From tag, CSeq and the top Via already tell
    # transactions apart.
    return (
        str(request.uri),
        request.from_.tag,
        request.call_id,
        request.cseq.sequence,
        via,
        method,
    )


class _Transaction(ABC):
    _retransmit_timers: frozenset[str] = frozenset()

    def __init__(self, *, reliable: bool, t1: float = T1, t2: float = T2, t4: float = T4) -> None:
        self.reliable = reliable
        self.t1, self.t2, self.t4 = t1, t2, t4
        self.state = State.TERMINATED
        self._deadlines: dict[str, float] = {}
        self._intervals: dict[str, float] = {}

    def next_deadline(self) -> float | None:
        """When `on_timer` must next be called, or None when no timer runs."""
        return min(self._deadlines.values(), default=None)

    def on_timer(self, now: float) -> list[Action]:
        actions: list[Action] = []
        while self.state is not State.TERMINATED:
            # At equal deadlines a timeout wins over one more retransmission.
            due = sorted(
                (at, name in self._retransmit_timers, name)
                for name, at in self._deadlines.items()
                if at <= now
            )
            if not due:
                break
            at, _, name = due[0]
            del self._deadlines[name]
            actions += self._fire(name, at)
        return actions

    @abstractmethod
    def _fire(self, name: str, at: float) -> list[Action]:
        """What timer `name`, due at `at`, does in this kind of transaction."""

    def _schedule(self, name: str, at: float) -> None:
        self._deadlines[name] = at

    def _cancel(self, *names: str) -> None:
        for name in names:
            self._deadlines.pop(name, None)

    def _start_retransmit(self, name: str, now: float) -> None:
        if not self.reliable:
            self._intervals[name] = self.t1
            self._schedule(name, now + self.t1)

    def _wait_then_terminate(self, name: str, duration: float, now: float) -> list[Action]:
        if self.reliable or duration <= 0:
            return self._terminate(f"{self.state.value}, timer {name} is zero")
        self._schedule(name, now + duration)
        return []

    def _terminate(self, reason: str) -> list[Action]:
        self.state = State.TERMINATED
        self._deadlines.clear()
        return [Terminated(reason)]

    def _time_out(self, name: str) -> list[Action]:
        return [TimedOut(name), *self._terminate(f"timer {name}")]


class _ClientTransaction(_Transaction):
    def __init__(
        self,
        request: SipRequest,
        *,
        reliable: bool,
        t1: float = T1,
        t2: float = T2,
        t4: float = T4,
    ) -> None:
        super().__init__(reliable=reliable, t1=t1, t2=t2, t4=t4)
        if not _is_rfc3261_branch(request.via.branch):
            raise ValueError("a client transaction needs a z9hG4bK branch in its top Via")
        self.request = request
        self.key = client_key(request)


class InviteClientTransaction(_ClientTransaction):
    """§17.1.1: Calling → Proceeding → Completed → Terminated, ACKing non-2xx finals itself."""

    _retransmit_timers = frozenset({"A"})

    def start(self, now: float) -> list[Action]:
        self.state = State.CALLING
        self._start_retransmit("A", now)
        self._schedule("B", now + 64 * self.t1)
        return [Send(self.request)]

    def on_response(self, response: SipResponse, now: float) -> list[Action]:
        if self.state in (State.CALLING, State.PROCEEDING):
            if response.status < 200:
                # Waiting for the final is now the TU's business (Timer C or a CANCEL).
                self.state = State.PROCEEDING
                self._cancel("A", "B")
                return [Deliver(response)]
            if response.status < 300:
                return [Deliver(response), *self._terminate("2xx received")]
            self.state = State.COMPLETED
            self._cancel("A", "B")
            ack = Send(self._ack(response))
            return [ack, Deliver(response), *self._wait_then_terminate("D", TIMER_D, now)]
        if self.state is State.COMPLETED and response.status >= 300:
            return [Send(self._ack(response))]
        return []

    def _fire(self, name: str, at: float) -> list[Action]:
        if name == "A":
            self._intervals["A"] *= 2
            self._schedule("A", at + self._intervals["A"])
            return [Send(self.request)]
        if name == "B":
            return self._time_out("B")
        return self._terminate("timer D")

    def _ack(self, response: SipResponse) -> SipRequest:
        """The ACK for a non-2xx final (§17.1.1.3), part of this transaction."""
        invite = self.request
        to = response.header("To")
        from_ = invite.header("From")
        assert to is not None
        assert from_ is not None
        headers = [
            ("Via", _first_via_value(invite)),
            ("Max-Forwards", "70"),
            ("From", from_),
            ("To", to),
            ("Call-ID", invite.call_id),
            ("CSeq", f"{invite.cseq.sequence} ACK"),
            *(("Route", value) for value in invite.header_values("Route")),
        ]
        return SipRequest.create("ACK", str(invite.uri), headers)


class NonInviteClientTransaction(_ClientTransaction):
    """§17.1.2: Trying → Proceeding → Completed → Terminated."""

    _retransmit_timers = frozenset({"E"})

    def start(self, now: float) -> list[Action]:
        self.state = State.TRYING
        self._start_retransmit("E", now)
        self._schedule("F", now + 64 * self.t1)
        return [Send(self.request)]

    def on_response(self, response: SipResponse, now: float) -> list[Action]:
        if self.state not in (State.TRYING, State.PROCEEDING):
            return []
        if response.status < 200:
            self.state = State.PROCEEDING
            return [Deliver(response)]
        self.state = State.COMPLETED
        self._cancel("E", "F")
        return [Deliver(response), *self._wait_then_terminate("K", self.t4, now)]

    def _fire(self, name: str, at: float) -> list[Action]:
        if name == "E":
            if self.state is State.PROCEEDING:
                self._intervals["E"] = self.t2
            else:
                self._intervals["E"] = min(2 * self._intervals["E"], self.t2)
            self._schedule("E", at + self._intervals["E"])
            return [Send(self.request)]
        if name == "F":
            return self._time_out("F")
        return self._terminate("timer K")


class _ServerTransaction(_Transaction):
    def __init__(
        self,
        request: SipRequest,
        *,
        reliable: bool,
        t1: float = T1,
        t2: float = T2,
        t4: float = T4,
    ) -> None:
        super().__init__(reliable=reliable, t1=t1, t2=t2, t4=t4)
        self.request = request
        self.key = server_key(request)
        self.last_response: SipResponse | None = None

    def _send(self, response: SipResponse) -> Send:
        self.last_response = response
        return Send(response)

    def _resend_last(self) -> list[Action]:
        return [] if self.last_response is None else [Send(self.last_response)]

    def _refuse(self, response: SipResponse) -> TransactionStateError:
        return TransactionStateError(f"cannot send {response.status} in state {self.state.value}")


class InviteServerTransaction(_ServerTransaction):
    """§17.2.1: Proceeding → Completed → Confirmed → Terminated. The TU sends any 100 Trying."""

    _retransmit_timers = frozenset({"G"})

    def start(self, now: float) -> list[Action]:
        """Take the INVITE; `now` is unused and kept so every transaction starts alike."""
        self.state = State.PROCEEDING
        return [Deliver(self.request)]

    def on_request(self, request: SipRequest, now: float) -> list[Action]:
        if request.method == "ACK":
            if self.state is not State.COMPLETED:
                return []
            self.state = State.CONFIRMED
            self._cancel("G", "H")
            return self._wait_then_terminate("I", self.t4, now)
        if self.state in (State.PROCEEDING, State.COMPLETED):
            return self._resend_last()
        return []

    def send_response(self, response: SipResponse, now: float) -> list[Action]:
        if self.state is not State.PROCEEDING:
            raise self._refuse(response)
        send = self._send(response)
        if response.status < 200:
            return [send]
        if response.status < 300:
            return [send, *self._terminate("2xx sent")]
        self.state = State.COMPLETED
        self._start_retransmit("G", now)
        self._schedule("H", now + 64 * self.t1)
        return [send]

    def _fire(self, name: str, at: float) -> list[Action]:
        if name == "G":
            self._intervals["G"] = min(2 * self._intervals["G"], self.t2)
            self._schedule("G", at + self._intervals["G"])
            return self._resend_last()
        if name == "H":
            return self._time_out("H")
        return self._terminate("timer I")


class NonInviteServerTransaction(_ServerTransaction):
    """§17.2.2: Trying → Proceeding → Completed → Terminated."""

    def start(self, now: float) -> list[Action]:
        """Take the request; `now` is unused and kept so every transaction starts alike."""
        self.state = State.TRYING
        return [Deliver(self.request)]

    def on_request(self, request: SipRequest, now: float) -> list[Action]:
        if self.state in (State.PROCEEDING, State.COMPLETED):
            return self._resend_last()
        return []

    def send_response(self, response: SipResponse, now: float) -> list[Action]:
        if self.state not in (State.TRYING, State.PROCEEDING):
            raise self._refuse(response)
        send = self._send(response)
        if response.status < 200:
            self.state = State.PROCEEDING
            return [send]
        self.state = State.COMPLETED
        return [send, *self._wait_then_terminate("J", 64 * self.t1, now)]

    def _fire(self, name: str, at: float) -> list[Action]:
        return self._terminate("timer J")


def _first_via_value(request: SipRequest) -> str:
    """The top Via only, even when the first Via header line holds several values."""
    via = request.via
    params = "".join(f";{k}" if v is None else f";{k}={v}" for k, v in via.params)
    return f"SIP/2.0/{via.transport} {via.sent_by}{params}"


class FinishedTransactions(Generic[_K, _V]):
    """Transactions that only wait out a timer (J, K, or RFC 6026's Accepted state), kept as
    small records: each for the same `lifetime`, so they expire in the order they were added
    and one clock serves them all instead of a timer each.

    `expire(now)` forgets every record that is due and says when the next one will be."""

    __slots__ = ("_queue", "_records", "lifetime")

    def __init__(self, lifetime: float) -> None:
        self.lifetime = lifetime
        self._records: dict[_K, _V] = {}
        self._queue: deque[tuple[float, _K, _V]] = deque()

    def __len__(self) -> int:
        return len(self._records)

    def __contains__(self, key: object) -> bool:
        return key in self._records

    def get(self, key: _K) -> _V | None:
        return self._records.get(key)

    def add(self, key: _K, record: _V, now: float) -> float:
        """Keep `record` under `key` (replacing any) until `now + lifetime`, which it returns."""
        expires = now + self.lifetime
        self._records[key] = record
        self._queue.append((expires, key, record))
        return expires

    def expire(self, now: float) -> float | None:
        queue, records = self._queue, self._records
        while queue and queue[0][0] <= now:
            _, key, record = queue.popleft()
            if records.get(key) is record:
                del records[key]
        return queue[0][0] if queue else None

    def clear(self) -> None:
        self._records.clear()
        self._queue.clear()
