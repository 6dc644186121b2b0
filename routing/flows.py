"""IVR flow documents: the node model, decoding with field-precise problems, graph validation.

A flow is a JSON object ``{"start": <node id>, "nodes": {<node id>: <node>, ...}}``. Each node is
tagged by ``"type"``. The media node executes a flow by starting at ``start`` and following one
edge (a node-id-valued field, see `edges`) per step. A missing optional ``next`` means the flow
ends there and the call is hung up; terminal nodes (enqueue, voicemail, transfer, hangup) hand
the call to something else or end it.

Pure code: no I/O. Which queues and prompts exist is the caller's knowledge, passed in.
"""

from __future__ import annotations

import functools
import re
import zoneinfo
from collections.abc import Container
from datetime import date, datetime
from typing import Annotated, Any, ClassVar, Final, Literal, TypeAlias, assert_never, get_args
from urllib.parse import urlsplit
from uuid import UUID

import msgspec

MAX_NODES: Final = 500


def _whole(body: str) -> str:
    # Python's `$` also matches before a final newline, so "menu\n" or "+4930123456\n" would pass
    # a plain `^…$`. The lookahead closes that gap and still reads as an ECMA (JSON Schema) regex.
    return rf"^(?:{body})(?!\n)$"


NODE_ID_PATTERN: Final = _whole(r"[A-Za-z][A-Za-z0-9_\-]{0,63}")
VARIABLE_PATTERN: Final = _whole(r"[a-z][a-z0-9_]{0,31}")
E164_PATTERN: Final = _whole(r"\+[1-9][0-9]{6,14}")
CLOCK_PATTERN: Final = _whole(r"(?:[01][0-9]|2[0-3]):[0-5][0-9]|24:00")
DTMF_KEY_PATTERN: Final = _whole(r"[0-9*#]")
SKILL_PATTERN: Final = _whole(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}")

_PATTERN_MEANINGS: Final = {
    NODE_ID_PATTERN: "must be a node id: a letter, then up to 63 letters, digits, '_' or '-'",
    VARIABLE_PATTERN: "must be a variable name: a lowercase letter, then up to 31 lowercase "
    "letters, digits or '_'",
    E164_PATTERN: "must be an E.164 number: '+', then 7 to 15 digits, not starting with 0",
    CLOCK_PATTERN: "must be a time of day as HH:MM, from 00:00 to 24:00",
    DTMF_KEY_PATTERN: "must be a single DTMF key: 0-9, * or #",
    SKILL_PATTERN: "must be a skill name: a letter or digit, then up to 63 letters, digits, "
    "'_', '.' or '-'",
}

NodeId = Annotated[str, msgspec.Meta(pattern=NODE_ID_PATTERN, description="A node of this flow")]
VariableName = Annotated[str, msgspec.Meta(pattern=VARIABLE_PATTERN)]
E164 = Annotated[str, msgspec.Meta(pattern=E164_PATTERN, description="+<country><number>")]
Clock = Annotated[str, msgspec.Meta(pattern=CLOCK_PATTERN, description="HH:MM, 24:00 as an end")]
DtmfKey = Annotated[str, msgspec.Meta(pattern=DTMF_KEY_PATTERN)]
SkillName = Annotated[str, msgspec.Meta(pattern=SKILL_PATTERN)]
Tts = Annotated[str, msgspec.Meta(min_length=1, max_length=1000, description="Text to speak")]
Priority = Annotated[int, msgspec.Meta(ge=0, le=10)]
Seconds = Annotated[int, msgspec.Meta(ge=1, le=30)]
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: Final[tuple[Weekday, ...]] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
"""In `datetime.weekday()` order."""
HoursRange = tuple[Clock, Clock]


class _Node(
    msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True, tag_field="type"
):
    pass


class PlayNode(_Node, frozen=True, kw_only=True, tag="play"):
    """Play a recorded prompt or speak a text, then go to `next` (none: hang up)."""

    prompt_id: UUID | None = None
    text: Tts | None = None
    next: NodeId | None = None


class MenuNode(_Node, frozen=True, kw_only=True, tag="menu"):
    """Prompt, then wait up to `timeout_seconds` for one key and branch on it.

    An unlisted key goes to `invalid`, silence to `timeout`; either absent means "prompt this
    menu again". After `retries` invalid or silent attempts the caller goes to `failed`.
    """

    prompt_id: UUID | None = None
    text: Tts | None = None
    options: Annotated[dict[DtmfKey, NodeId], msgspec.Meta(min_length=1)]
    timeout_seconds: Seconds = 5
    retries: Annotated[int, msgspec.Meta(ge=0, le=5)] = 2
    invalid: NodeId | None = None
    timeout: NodeId | None = None
    failed: NodeId


class GatherNode(_Node, frozen=True, kw_only=True, tag="gather"):
    """Prompt, then collect `min_digits`..`max_digits` digits into the call variable `variable`.

    Collection ends at `max_digits`, at the `terminator` key (not stored) or after
    `timeout_seconds` without a key. Fewer than `min_digits` at that point goes to `timeout`
    (absent: to `next` with what was collected).
    """

    prompt_id: UUID | None = None
    text: Tts | None = None
    min_digits: Annotated[int, msgspec.Meta(ge=1, le=32)] = 1
    max_digits: Annotated[int, msgspec.Meta(ge=1, le=32)]
    terminator: Literal["#", "*"] | None = "#"
    timeout_seconds: Seconds = 5
    variable: VariableName
    next: NodeId | None = None
    timeout: NodeId | None = None


class BusinessHoursNode(_Node, frozen=True, kw_only=True, tag="business_hours"):
    """Branch on whether the tenant is open now, in `timezone`'s wall-clock time.

    A weekday that is not listed is closed all day; a holiday is closed all day. Ranges are
    half-open ([start, end)); a range past midnight is written as two ranges on two days.
    """

    timezone: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    weekly: dict[Weekday, Annotated[list[HoursRange], msgspec.Meta(max_length=24)]] = {}
    holidays: Annotated[list[date], msgspec.Meta(max_length=1000)] = []
    open: NodeId
    closed: NodeId

    def is_open(self, at: datetime) -> bool:
        """Whether `at` (an aware datetime) falls inside these business hours."""
        if at.tzinfo is None:
            raise ValueError("is_open needs an aware datetime")
        local = at.astimezone(zoneinfo.ZoneInfo(self.timezone))
        if local.date() in self.holidays:
            return False
        minute = local.hour * 60 + local.minute
        ranges = self.weekly.get(WEEKDAYS[local.weekday()], [])
        return any(_minutes(start) <= minute < _minutes(end) for start, end in ranges)


class ContactLookupNode(_Node, frozen=True, kw_only=True, tag="contact_lookup"):
    """Look the caller's number up in the tenant's contacts.

    Blocked callers go to `blocked`. VIPs get `vip_priority` and go to `vip` (absent: `next`);
    everyone else, known or not, goes to `next`.
    """

    vip: NodeId | None = None
    blocked: NodeId
    next: NodeId | None = None
    vip_priority: Annotated[int, msgspec.Meta(ge=1, le=10)] = 8


class HttpLookupNode(_Node, frozen=True, kw_only=True, tag="http_lookup"):
    """Ask the tenant's own HTTPS endpoint about the call; store the answer in `store_as`.

    An answer within `timeout_ms` goes to `next`; an error or a timeout goes to `fallback`.
    """

    url: Annotated[str, msgspec.Meta(min_length=1, max_length=2048)]
    timeout_ms: Annotated[int, msgspec.Meta(ge=100, le=5000)] = 1500
    store_as: VariableName
    next: NodeId | None = None
    fallback: NodeId


class SetNode(_Node, frozen=True, kw_only=True, tag="set"):
    """Set the call's queue priority, required skills (name → minimum level) and attributes."""

    priority: Priority | None = None
    skills: Annotated[
        dict[SkillName, Annotated[int, msgspec.Meta(ge=1, le=10)]], msgspec.Meta(max_length=32)
    ] = {}
    attributes: Annotated[
        dict[VariableName, Annotated[str, msgspec.Meta(max_length=256)]],
        msgspec.Meta(max_length=32),
    ] = {}
    next: NodeId | None = None


class EnqueueNode(_Node, frozen=True, kw_only=True, tag="enqueue"):
    """Put the call into a queue. Terminal: the queue's own overflow policy takes it from here."""

    queue_id: UUID
    priority: Priority | None = None


class VoicemailNode(_Node, frozen=True, kw_only=True, tag="voicemail"):
    """Record a message into a `mailbox` or for a queue's agents, after an optional greeting."""

    mailbox: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] | None = None
    queue_id: UUID | None = None
    prompt_id: UUID | None = None
    text: Tts | None = None


class TransferNode(_Node, frozen=True, kw_only=True, tag="transfer"):
    """Send the call to an outside number.

    Caller-ID shown there: the caller's own number, or the tenant number that was dialled.
    """

    number: E164
    caller_id: Literal["caller", "tenant_number"] = "tenant_number"


class HangupNode(_Node, frozen=True, kw_only=True, tag="hangup"):
    """End the call; `reason` goes to the call record."""

    reason: Annotated[str, msgspec.Meta(min_length=1, max_length=200)] | None = None


Node: TypeAlias = (
    PlayNode
    | MenuNode
    | GatherNode
    | BusinessHoursNode
    | ContactLookupNode
    | HttpLookupNode
    | SetNode
    | EnqueueNode
    | VoicemailNode
    | TransferNode
    | HangupNode
)
NODE_TYPES: Final[tuple[str, ...]] = tuple(
    sorted(str(cls.__struct_config__.tag) for cls in get_args(Node))
)
INPUT_NODES: Final = (MenuNode, GatherNode)
"""Nodes that wait for the caller: the only ones a loop in a flow may pass through."""


class FlowDocument(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    start: NodeId
    nodes: Annotated[dict[NodeId, Node], msgspec.Meta(min_length=1, max_length=MAX_NODES)]


class FlowProblem(msgspec.Struct, frozen=True, kw_only=True):
    field: str
    """Dotted path into the document (`nodes.menu.options.1`); "" is the document itself."""
    message: str


class FlowInvalid(Exception):
    """A flow document that cannot be used, with every problem found."""

    status: ClassVar[int] = 422
    code: ClassVar[str] = "invalid-flow"
    title: ClassVar[str] = "Invalid flow"

    def __init__(self, problems: list[FlowProblem]) -> None:
        super().__init__("; ".join(f"{p.field or 'document'}: {p.message}" for p in problems))
        self.problems = problems


# --- public helpers -----------------------------------------------------------------------------


def edges(node: Node) -> dict[str, str]:
    """Every node id a node can lead to, by field (`options.<key>` for menu options)."""
    pairs: list[tuple[str, str | None]]
    match node:
        case PlayNode():
            pairs = [("next", node.next)]
        case MenuNode():
            pairs = [(f"options.{key}", target) for key, target in node.options.items()]
            pairs += [("invalid", node.invalid), ("timeout", node.timeout), ("failed", node.failed)]
        case GatherNode():
            pairs = [("next", node.next), ("timeout", node.timeout)]
        case BusinessHoursNode():
            pairs = [("open", node.open), ("closed", node.closed)]
        case ContactLookupNode():
            pairs = [("vip", node.vip), ("blocked", node.blocked), ("next", node.next)]
        case HttpLookupNode():
            pairs = [("next", node.next), ("fallback", node.fallback)]
        case SetNode():
            pairs = [("next", node.next)]
        case EnqueueNode() | VoicemailNode() | TransferNode() | HangupNode():
            pairs = []
        case _:
            assert_never(node)
    return {field: target for field, target in pairs if target is not None}


def referenced_queues(doc: FlowDocument) -> set[UUID]:
    return {queue_id for node in doc.nodes.values() for _, queue_id in _queue_refs(node)}


def referenced_prompts(doc: FlowDocument) -> set[UUID]:
    return {prompt_id for node in doc.nodes.values() for _, prompt_id in _prompt_refs(node)}


def encode_flow(doc: FlowDocument) -> bytes:
    """Canonical JSON (sorted keys, defaults written out) for storing a published version.

    Defaults are spelled out so that a stored version keeps its meaning if a default changes.
    """
    return msgspec.json.encode(doc, order="sorted")


def decode_flow(data: bytes | dict[str, Any]) -> FlowDocument:
    """Decode a flow and check everything that needs neither the graph nor the tenant's catalog.

    Raises `FlowInvalid` with one problem per bad field (the first one msgspec finds in each
    node, plus every rule a decoded node breaks).
    """
    raw: object = data
    if isinstance(data, bytes | bytearray | memoryview | str):
        try:
            raw = msgspec.json.decode(data)
        except msgspec.DecodeError as exc:
            raise FlowInvalid([FlowProblem(field="", message=f"malformed JSON: {exc}")]) from None
    start, nodes, problems = _decode_parts(raw)
    if problems or start is None:
        raise FlowInvalid(_ordered(problems))
    return FlowDocument(start=start, nodes=nodes)


def validate_flow(
    doc: FlowDocument, *, queues: Container[UUID], prompts: Container[UUID]
) -> list[FlowProblem]:
    """Every problem with `doc`, sorted by field; empty when the flow can be published.

    `queues` and `prompts` are the tenant's own ids: anything else is unknown. A document built
    in code rather than decoded is held to the same shape rules as `decode_flow`.
    """
    _, _, problems = _decode_parts(msgspec.to_builtins(doc))
    for node_id, node in doc.nodes.items():
        path = f"nodes.{node_id}"
        for field, target in edges(node).items():
            if target not in doc.nodes:
                problems.append(_problem(f"{path}.{field}", f"dangling edge: no node {target!r}"))
        for field, queue_id in _queue_refs(node):
            if queue_id not in queues:
                problems.append(_problem(f"{path}.{field}", f"unknown queue {queue_id}"))
        for field, prompt_id in _prompt_refs(node):
            if prompt_id not in prompts:
                problems.append(_problem(f"{path}.{field}", f"unknown prompt {prompt_id}"))
    if doc.start not in doc.nodes:
        problems.append(_problem("start", f"no node {doc.start!r}"))
    else:
        reached = _reachable(doc)
        problems += [
            _problem(f"nodes.{node_id}", "unreachable from start")
            for node_id in doc.nodes
            if node_id not in reached
        ]
    problems += _loops_without_input(doc)
    return _ordered(problems)


# --- references and graph -----------------------------------------------------------------------


def _queue_refs(node: Node) -> list[tuple[str, UUID]]:
    if isinstance(node, EnqueueNode | VoicemailNode) and node.queue_id is not None:
        return [("queue_id", node.queue_id)]
    return []


def _prompt_refs(node: Node) -> list[tuple[str, UUID]]:
    if (
        isinstance(node, PlayNode | MenuNode | GatherNode | VoicemailNode)
        and node.prompt_id is not None
    ):
        return [("prompt_id", node.prompt_id)]
    return []


def _reachable(doc: FlowDocument) -> set[str]:
    reached = {doc.start}
    todo = [doc.start]
    while todo:
        for target in edges(doc.nodes[todo.pop()]).values():
            if target in doc.nodes and target not in reached:
                reached.add(target)
                todo.append(target)
    return reached


def _loops_without_input(doc: FlowDocument) -> list[FlowProblem]:
    """A loop that never waits for the caller would spin forever (play → play → play …)."""
    graph = {
        node_id: [
            target
            for target in edges(node).values()
            if target in doc.nodes and not isinstance(doc.nodes[target], INPUT_NODES)
        ]
        for node_id, node in doc.nodes.items()
        if not isinstance(node, INPUT_NODES)
    }
    problems = []
    for component in _strongly_connected(graph):
        if len(component) > 1 or component[0] in graph[component[0]]:
            members = sorted(component)
            problems.append(
                _problem(
                    f"nodes.{members[0]}",
                    f"loop without caller input through {', '.join(members)}: "
                    "a loop must pass through a menu or gather node",
                )
            )
    return problems


def _strongly_connected(graph: dict[str, list[str]]) -> list[list[str]]:
    """Kosaraju's algorithm, iterative (a 500-node chain would overflow a recursive one)."""
    finished: list[str] = []
    seen: set[str] = set()
    for root in graph:
        if root in seen:
            continue
        seen.add(root)
        stack = [(root, iter(graph[root]))]
        while stack:
            node, pending = stack[-1]
            for target in pending:
                if target not in seen:
                    seen.add(target)
                    stack.append((target, iter(graph[target])))
                    break
            else:
                stack.pop()
                finished.append(node)
    incoming: dict[str, list[str]] = {node: [] for node in graph}
    for source, targets in graph.items():
        for target in targets:
            incoming[target].append(source)
    components: list[list[str]] = []
    assigned: set[str] = set()
    for root in reversed(finished):
        if root in assigned:
            continue
        assigned.add(root)
        component, todo = [], [root]
        while todo:
            node = todo.pop()
            component.append(node)
            for source in incoming[node]:
                if source not in assigned:
                    assigned.add(source)
                    todo.append(source)
        components.append(component)
    return components


# --- decoding -----------------------------------------------------------------------------------


def _decode_parts(raw: object) -> tuple[str | None, dict[str, Node], list[FlowProblem]]:
    """Decode node by node, so that one bad node does not hide the problems of the others."""
    if not isinstance(raw, dict):
        return None, {}, [_problem("", "a flow must be a JSON object")]
    problems = [
        _problem(str(key), "unknown field")
        for key in raw
        if key not in FlowDocument.__struct_fields__
    ]
    start: str | None = None
    if "start" not in raw:
        problems.append(_problem("start", "required field is missing"))
    else:
        try:
            start = msgspec.convert(raw["start"], NodeId)
        except msgspec.ValidationError as exc:
            problems.append(_problem("start", _plain(str(exc))))
    nodes: dict[str, Node] = {}
    raw_nodes = raw.get("nodes")
    if "nodes" not in raw:
        problems.append(_problem("nodes", "required field is missing"))
    elif not isinstance(raw_nodes, dict):
        problems.append(_problem("nodes", "must be an object mapping node ids to nodes"))
    elif not raw_nodes:
        problems.append(_problem("nodes", "a flow needs at least one node"))
    elif len(raw_nodes) > MAX_NODES:
        problems.append(
            _problem("nodes", f"a flow has at most {MAX_NODES} nodes, not {len(raw_nodes)}")
        )
    else:
        for node_id, raw_node in raw_nodes.items():
            path = f"nodes.{node_id}"
            try:
                msgspec.convert(node_id, NodeId)
            except msgspec.ValidationError:
                problems.append(_problem(path, _PATTERN_MEANINGS[NODE_ID_PATTERN]))
                continue
            try:
                node: Node = msgspec.convert(raw_node, Node)
            except msgspec.ValidationError as exc:
                problems.append(_located(path, raw_node, str(exc)))
                continue
            problems += _node_rules(path, node)
            nodes[node_id] = node
    return start, nodes, problems


_ERROR = re.compile(r"(?P<message>.*?)(?: - at `(?P<key>key` in `)?\$(?P<path>[^`]*)`)?", re.S)
_SEGMENT = re.compile(r"\.(\w+)|\[(\d+|\.\.\.)\]")
_NAMED = re.compile(r"Object (?P<what>contains unknown|missing required) field `(?P<name>[^`]+)`")
_ENTRY: Final = object()
"""Stands for msgspec's `[...]`: an entry of a map that its error does not name."""


def _located(path: str, raw_node: object, error: str) -> FlowProblem:
    """Turn msgspec's error for one node into a problem on the exact field, map keys included."""
    match = _ERROR.fullmatch(error)
    assert match is not None  # the pattern matches any text
    message = match["message"]
    steps: list[object] = [
        name or (_ENTRY if index == "..." else int(index))
        for name, index in _SEGMENT.findall(match["path"] or "")
    ]
    if match["key"]:
        steps.append(_ENTRY)
    steps = _name_entries(raw_node, steps, error)
    named = _NAMED.fullmatch(message)
    if named:
        steps.append(named["name"])
    field = ".".join([path, *map(str, steps)])
    if steps == ["type"]:
        allowed = ", ".join(NODE_TYPES)
        bad_tag = re.fullmatch(r"Invalid value '(.*)'", message, re.S)
        if bad_tag:
            message = f"unknown node type '{bad_tag[1]}'; expected one of: {allowed}"
        elif named:
            message = f"node type is required, one of: {allowed}"
        else:
            message = f"node type must be a string, one of: {allowed}"
    elif named:
        message = (
            "unknown field" if named["what"] == "contains unknown" else "required field is missing"
        )
    else:
        message = _plain(message)
        if match["key"]:
            message = f"invalid key: {message}"
    return _problem(field, message)


def _name_entries(raw_node: object, steps: list[object], error: str) -> list[object]:
    """Find which map entry an `[...]` stands for: the entry that alone gives the same error.

    msgspec checks entries in order and stops at the first bad one, so trying each entry on
    its own finds it.
    """
    for i, step in enumerate(steps):
        if step is not _ENTRY:
            continue
        entries = _at(raw_node, steps[:i])
        if not isinstance(entries, dict):
            return steps[:i]
        for key, value in entries.items():
            trial = _replaced(raw_node, steps[:i], {key: value})
            try:
                msgspec.convert(trial, Node)
            except msgspec.ValidationError as exc:
                if str(exc) == error:
                    steps = [*steps[:i], key, *steps[i + 1 :]]
                    raw_node = trial
                    break
        else:
            return steps[:i]
    return steps


def _at(raw: object, steps: list[object]) -> object:
    for step in steps:
        if isinstance(raw, dict):
            raw = raw.get(step)
        elif isinstance(raw, list | tuple) and isinstance(step, int) and step < len(raw):
            raw = raw[step]
        else:
            return None
    return raw


def _replaced(raw: object, steps: list[object], value: object) -> object:
    if not steps:
        return value
    head, rest = steps[0], steps[1:]
    if isinstance(raw, dict):
        return {**raw, head: _replaced(raw.get(head), rest, value)}
    if isinstance(raw, list | tuple) and isinstance(head, int):
        copy = list(raw)
        copy[head] = _replaced(copy[head], rest, value)
        return copy
    return raw


def _plain(message: str) -> str:
    """msgspec's message without its location, and with a regex replaced by what it means."""
    message = message.split(" - at `", 1)[0]
    for pattern, meaning in _PATTERN_MEANINGS.items():
        if repr(pattern) in message:
            return meaning
    return message


# --- rules msgspec cannot express ---------------------------------------------------------------


def _node_rules(path: str, node: Node) -> list[FlowProblem]:
    problems: list[FlowProblem] = []
    match node:
        case PlayNode() | MenuNode() | GatherNode():
            problems += _prompt_rules(path, node.prompt_id, node.text, required=True)
        case VoicemailNode():
            problems += _prompt_rules(path, node.prompt_id, node.text, required=False)
            if (node.mailbox is None) == (node.queue_id is None):
                problems.append(_problem(f"{path}.mailbox", "give either mailbox or queue_id"))
        case _:
            pass
    match node:
        case GatherNode() if node.max_digits < node.min_digits:
            problems.append(_problem(f"{path}.max_digits", "must be at least min_digits"))
        case BusinessHoursNode():
            problems += _hours_rules(path, node)
        case HttpLookupNode():
            problems += _url_rules(f"{path}.url", node.url)
        case _:
            pass
    return problems


def _prompt_rules(
    path: str, prompt_id: UUID | None, text: str | None, *, required: bool
) -> list[FlowProblem]:
    if prompt_id is not None and text is not None:
        return [_problem(f"{path}.text", "give either prompt_id or text, not both")]
    if required and prompt_id is None and text is None:
        return [_problem(f"{path}.prompt_id", "a prompt_id or a text is required")]
    return []


def _hours_rules(path: str, node: BusinessHoursNode) -> list[FlowProblem]:
    problems = []
    if not _known_time_zone(node.timezone):
        problems.append(_problem(f"{path}.timezone", f"unknown time zone {node.timezone!r}"))
    for day, ranges in node.weekly.items():
        previous_end = -1
        for i, (start, end) in enumerate(ranges):
            field = f"{path}.weekly.{day}.{i}"
            if _minutes(start) >= _minutes(end):
                problems.append(_problem(field, f"starts at {start}, not before its end {end}"))
            elif _minutes(start) < previous_end:
                problems.append(
                    _problem(field, "overlaps the range before it (ranges go in time order)")
                )
            previous_end = max(previous_end, _minutes(end))
    return problems


def _url_rules(field: str, url: str) -> list[FlowProblem]:
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        return [_problem(field, "not a valid URL")]
    if parts.scheme != "https":
        return [_problem(field, "must be an https:// URL")]
    if not host or any(c.isspace() or not c.isprintable() for c in url):
        return [_problem(field, "not a valid URL")]
    if parts.username is not None or parts.password is not None:
        return [_problem(field, "credentials do not belong in a flow; drop user:password@")]
    return []


@functools.cache
def _time_zones() -> frozenset[str]:
    # The database directory also holds "localtime" (the machine's own zone, whatever that is
    # where the flow runs) and "Factory" (a placeholder meaning "no zone set").
    return frozenset(zoneinfo.available_timezones() - {"localtime", "Factory"})


def _known_time_zone(name: str) -> bool:
    # Only names from the list: ZoneInfo() alone would also load paths and the files above.
    if name not in _time_zones():
        return False
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return False
    return True


def _minutes(clock: str) -> int:
    hours, minutes = clock.split(":")
    return int(hours) * 60 + int(minutes)


def _problem(field: str, message: str) -> FlowProblem:
    return FlowProblem(field=field, message=message)


def _ordered(problems: list[FlowProblem]) -> list[FlowProblem]:
    return sorted(set(problems), key=lambda p: (p.field, p.message))
