"""IVR flow documents: decoding, field-precise problems, graph rules, canonical encoding."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any, get_args
from uuid import UUID

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from routing.flows import (
    MAX_NODES,
    NODE_TYPES,
    BusinessHoursNode,
    FlowDocument,
    FlowInvalid,
    FlowProblem,
    MenuNode,
    Node,
    decode_flow,
    edges,
    encode_flow,
    referenced_prompts,
    referenced_queues,
    validate_flow,
)

WELCOME = UUID("0191d0a4-7a1e-7c3e-9f00-000000000001")
MENU_PROMPT = UUID("0191d0a4-7a1e-7c3e-9f00-000000000002")
CLOSED_PROMPT = UUID("0191d0a4-7a1e-7c3e-9f00-000000000003")
SALES = UUID("0191d0a4-7a1e-7c3e-9f00-0000000000a1")
SUPPORT = UUID("0191d0a4-7a1e-7c3e-9f00-0000000000a2")
VIP = UUID("0191d0a4-7a1e-7c3e-9f00-0000000000a3")
OTHER_TENANTS_QUEUE = UUID("0191d0a4-7a1e-7c3e-9f00-0000000000ff")
OTHER_TENANTS_PROMPT = UUID("0191d0a4-7a1e-7c3e-9f00-0000000000fe")

QUEUES = {SALES, SUPPORT, VIP}
PROMPTS = {WELCOME, MENU_PROMPT, CLOSED_PROMPT}


def golden_flow() -> dict[str, Any]:
    """Welcome, VIP/blocked lookup, Berlin office hours with holidays, a two-queue menu."""
    return {
        "start": "welcome",
        "nodes": {
            "welcome": {"type": "play", "prompt_id": str(WELCOME), "next": "who"},
            "who": {
                "type": "contact_lookup",
                "vip": "vip_q",
                "blocked": "blocked",
                "next": "hours",
            },
            "hours": {
                "type": "business_hours",
                "timezone": "Europe/Berlin",
                "weekly": {
                    "mon": [["08:00", "18:00"]],
                    "tue": [["08:00", "12:00"], ["13:00", "18:00"]],
                    "wed": [["08:00", "18:00"]],
                    "thu": [["08:00", "18:00"]],
                    "fri": [["08:00", "16:00"]],
                },
                "holidays": ["2026-12-24", "2026-12-25", "2026-12-26"],
                "open": "menu",
                "closed": "closed_msg",
            },
            "menu": {
                "type": "menu",
                "prompt_id": str(MENU_PROMPT),
                "options": {"1": "sales_q", "2": "support_set", "#": "menu"},
                "timeout_seconds": 5,
                "retries": 2,
                "invalid": "sorry",
                "failed": "bye",
            },
            "sorry": {"type": "play", "text": "Sorry, that is not an option.", "next": "menu"},
            "sales_q": {"type": "enqueue", "queue_id": str(SALES)},
            "support_set": {
                "type": "set",
                "priority": 3,
                "skills": {"german": 2},
                "attributes": {"line": "support"},
                "next": "support_q",
            },
            "support_q": {"type": "enqueue", "queue_id": str(SUPPORT)},
            "vip_q": {"type": "enqueue", "queue_id": str(VIP), "priority": 9},
            "closed_msg": {"type": "play", "prompt_id": str(CLOSED_PROMPT), "next": "mailbox"},
            "mailbox": {"type": "voicemail", "queue_id": str(SUPPORT)},
            "blocked": {"type": "hangup", "reason": "blocked caller"},
            "bye": {"type": "hangup"},
        },
    }


def problems_in(
    raw: dict[str, Any], *, queues: set[UUID] = QUEUES, prompts: set[UUID] = PROMPTS
) -> list[FlowProblem]:
    """What a tenant publishing `raw` would be told, from whichever layer finds it."""
    try:
        doc = decode_flow(msgspec.json.encode(raw))
    except FlowInvalid as exc:
        return exc.problems
    return validate_flow(doc, queues=queues, prompts=prompts)


def only_problem(raw: dict[str, Any], **kwargs: Any) -> FlowProblem:
    problems = problems_in(raw, **kwargs)
    assert len(problems) == 1, problems
    return problems[0]


# --- the golden flow ----------------------------------------------------------------------------


def test_a_realistic_flow_decodes_validates_clean_and_round_trips() -> None:
    doc = decode_flow(msgspec.json.encode(golden_flow()))

    assert validate_flow(doc, queues=QUEUES, prompts=PROMPTS) == []
    assert decode_flow(encode_flow(doc)) == doc
    assert referenced_queues(doc) == {SALES, SUPPORT, VIP}
    assert referenced_prompts(doc) == {WELCOME, MENU_PROMPT, CLOSED_PROMPT}
    assert edges(doc.nodes["menu"]) == {
        "options.1": "sales_q",
        "options.2": "support_set",
        "options.#": "menu",
        "invalid": "sorry",
        "failed": "bye",
    }
    assert edges(doc.nodes["sales_q"]) == {}


def test_a_flow_given_as_a_dict_decodes_like_its_json() -> None:
    assert decode_flow(golden_flow()) == decode_flow(msgspec.json.encode(golden_flow()))


def test_encoding_is_canonical_whatever_the_input_key_order() -> None:
    raw = golden_flow()
    reordered = {
        "nodes": {
            key: dict(reversed(node.items())) for key, node in reversed(raw["nodes"].items())
        },
        "start": raw["start"],
    }

    canonical = encode_flow(decode_flow(raw))

    assert encode_flow(decode_flow(reordered)) == canonical
    assert canonical.startswith(b'{"nodes":{"blocked":{"reason":"blocked caller","type":"hangup"}')
    # Defaults are written out, so a stored version keeps its meaning if a default changes.
    assert b'"retries":2' in canonical
    assert b'"vip_priority":8' in canonical


def test_business_hours_tell_open_from_closed_in_the_tenants_time_zone() -> None:
    hours = decode_flow(golden_flow()).nodes["hours"]
    assert isinstance(hours, BusinessHoursNode)
    is_open = hours.is_open

    # Monday 2026-03-02, 07:30 UTC is 08:30 in Berlin (CET, UTC+1).
    assert is_open(datetime(2026, 3, 2, 7, 30, tzinfo=UTC))
    # Tuesday lunch break, 12:30 Berlin.
    assert not is_open(datetime(2026, 3, 3, 11, 30, tzinfo=UTC))
    # 18:00 is the end of the day and no longer open.
    assert not is_open(datetime(2026, 3, 2, 17, 0, tzinfo=UTC))
    # Summer time: 16:59 UTC is 18:59 in Berlin (CEST, UTC+2).
    assert not is_open(datetime(2026, 7, 6, 16, 59, tzinfo=UTC))
    assert is_open(datetime(2026, 7, 6, 15, 59, tzinfo=UTC))
    # Christmas Day 2026 is a Friday, and a holiday.
    assert not is_open(datetime(2026, 12, 25, 10, 0, tzinfo=UTC))
    # No hours on Saturday.
    assert not is_open(datetime(2026, 3, 7, 10, 0, tzinfo=UTC))
    with pytest.raises(ValueError, match="aware"):
        is_open(datetime(2026, 3, 2, 9, 0))  # noqa: DTZ001


# --- rejections, each on its exact field --------------------------------------------------------


def test_an_edge_to_a_missing_node_is_reported_on_the_edge() -> None:
    raw = golden_flow()
    raw["nodes"]["menu"]["options"]["2"] = "nowhere"
    raw["nodes"]["menu"]["options"]["3"] = "support_set"  # keep support_set reachable

    assert only_problem(raw) == FlowProblem(
        field="nodes.menu.options.2", message="dangling edge: no node 'nowhere'"
    )


def test_an_unknown_node_type_is_named_with_its_node() -> None:
    raw = golden_flow()
    raw["nodes"]["bye"] = {"type": "teleport"}

    with pytest.raises(FlowInvalid) as caught:
        decode_flow(msgspec.json.encode(raw))

    [problem] = caught.value.problems
    assert problem.field == "nodes.bye.type"
    assert problem.message.startswith("unknown node type 'teleport'; expected one of: ")
    assert "business_hours" in problem.message


def test_a_node_without_a_type_is_told_which_types_exist() -> None:
    raw = golden_flow()
    raw["nodes"]["bye"] = {"reason": "x"}

    problem = only_problem(raw)

    assert problem.field == "nodes.bye.type"
    assert problem.message.startswith("node type is required")


def test_an_unknown_field_in_a_node_is_reported_by_name() -> None:
    raw = golden_flow()
    raw["nodes"]["welcome"]["colour"] = "blue"

    assert only_problem(raw) == FlowProblem(field="nodes.welcome.colour", message="unknown field")


def test_a_missing_required_field_is_reported_by_name() -> None:
    raw = golden_flow()
    del raw["nodes"]["menu"]["failed"]

    assert only_problem(raw) == FlowProblem(
        field="nodes.menu.failed", message="required field is missing"
    )


def test_another_tenants_queue_is_an_unknown_queue() -> None:
    raw = golden_flow()
    raw["nodes"]["sales_q"]["queue_id"] = str(OTHER_TENANTS_QUEUE)

    assert only_problem(raw) == FlowProblem(
        field="nodes.sales_q.queue_id", message=f"unknown queue {OTHER_TENANTS_QUEUE}"
    )


def test_a_prompt_outside_the_tenants_set_is_an_unknown_prompt() -> None:
    raw = golden_flow()
    raw["nodes"]["welcome"]["prompt_id"] = str(OTHER_TENANTS_PROMPT)

    assert only_problem(raw) == FlowProblem(
        field="nodes.welcome.prompt_id", message=f"unknown prompt {OTHER_TENANTS_PROMPT}"
    )


def test_a_time_zone_that_does_not_exist_is_rejected() -> None:
    raw = golden_flow()
    raw["nodes"]["hours"]["timezone"] = "Mars/Olympus"

    assert only_problem(raw) == FlowProblem(
        field="nodes.hours.timezone", message="unknown time zone 'Mars/Olympus'"
    )


@pytest.mark.parametrize(
    "name", ["localtime", "Factory", "../../etc/passwd", "/etc/localtime", "europe/berlin", ""]
)
def test_only_iana_time_zone_names_are_accepted(name: str) -> None:
    raw = golden_flow()
    raw["nodes"]["hours"]["timezone"] = name

    assert only_problem(raw).field == "nodes.hours.timezone"


def test_overlapping_hours_are_reported_on_the_later_range() -> None:
    raw = golden_flow()
    raw["nodes"]["hours"]["weekly"]["tue"] = [["08:00", "12:00"], ["11:00", "18:00"]]

    problem = only_problem(raw)

    assert problem.field == "nodes.hours.weekly.tue.1"
    assert "overlaps" in problem.message


def test_a_range_that_ends_before_it_starts_is_rejected() -> None:
    raw = golden_flow()
    raw["nodes"]["hours"]["weekly"]["wed"] = [["18:00", "08:00"]]

    assert only_problem(raw) == FlowProblem(
        field="nodes.hours.weekly.wed.0", message="starts at 18:00, not before its end 08:00"
    )


def test_an_hour_of_25_is_rejected_on_the_exact_end_time() -> None:
    raw = golden_flow()
    raw["nodes"]["hours"]["weekly"]["thu"] = [["08:00", "25:00"]]

    assert only_problem(raw) == FlowProblem(
        field="nodes.hours.weekly.thu.0.1",
        message="must be a time of day as HH:MM, from 00:00 to 24:00",
    )


def test_a_day_can_end_at_midnight_written_24_00() -> None:
    raw = golden_flow()
    raw["nodes"]["hours"]["weekly"]["sat"] = [["00:00", "24:00"]]

    assert problems_in(raw) == []


def test_a_node_nothing_leads_to_is_unreachable() -> None:
    raw = golden_flow()
    raw["nodes"]["orphan"] = {"type": "hangup"}

    assert only_problem(raw) == FlowProblem(field="nodes.orphan", message="unreachable from start")


def test_a_flow_without_start_is_rejected() -> None:
    raw = golden_flow()
    del raw["start"]

    assert only_problem(raw) == FlowProblem(field="start", message="required field is missing")


def test_a_start_that_names_no_node_is_rejected() -> None:
    raw = golden_flow()
    raw["start"] = "nowhere"

    assert only_problem(raw) == FlowProblem(field="start", message="no node 'nowhere'")


def test_a_loop_of_plays_that_never_waits_for_the_caller_is_rejected() -> None:
    raw = golden_flow()
    raw["nodes"]["bye"] = {"type": "play", "text": "Goodbye.", "next": "bye_again"}
    raw["nodes"]["bye_again"] = {"type": "play", "text": "Really, goodbye.", "next": "bye"}

    problem = only_problem(raw)

    assert problem.field == "nodes.bye"
    assert problem.message.startswith("loop without caller input through bye, bye_again")


def test_a_play_that_leads_to_itself_is_a_loop() -> None:
    raw = golden_flow()
    raw["nodes"]["bye"] = {"type": "play", "text": "Goodbye.", "next": "bye"}

    assert only_problem(raw).message.startswith("loop without caller input through bye:")


def test_a_loop_through_lookups_set_and_business_hours_only_is_rejected() -> None:
    raw = golden_flow()
    # closed → lookup → set → hours → closed … spins while the office is closed.
    raw["nodes"]["hours"]["closed"] = "crm"
    raw["nodes"]["crm"] = {
        "type": "http_lookup",
        "url": "https://crm.example.com/lookup",
        "store_as": "crm",
        "next": "tag",
        "fallback": "who",
    }
    raw["nodes"]["tag"] = {"type": "set", "priority": 5, "next": "hours"}
    del raw["nodes"]["closed_msg"], raw["nodes"]["mailbox"]

    problem = only_problem(raw)

    assert problem.field == "nodes.crm"
    assert problem.message.startswith("loop without caller input through crm, hours, tag, who")


def test_a_loop_through_a_menu_is_accepted() -> None:
    raw = golden_flow()
    # menu → sorry → menu is already in the golden flow; make the timeout branch loop as well.
    raw["nodes"]["menu"]["timeout"] = "again"
    raw["nodes"]["again"] = {"type": "play", "text": "Are you still there?", "next": "menu"}

    assert problems_in(raw) == []


def test_a_loop_through_a_gather_is_accepted() -> None:
    raw = golden_flow()
    raw["nodes"]["menu"]["options"]["3"] = "account"
    raw["nodes"]["account"] = {
        "type": "gather",
        "text": "Enter your account number.",
        "max_digits": 8,
        "variable": "account",
        "next": "check",
        "timeout": "menu",
    }
    raw["nodes"]["check"] = {
        "type": "http_lookup",
        "url": "https://crm.example.com/accounts",
        "store_as": "account_info",
        "next": "support_set",
        "fallback": "account",
    }

    assert problems_in(raw) == []


def test_an_http_lookup_must_use_https() -> None:
    raw = golden_flow()
    raw["nodes"]["who"]["next"] = "crm"
    raw["nodes"]["crm"] = {
        "type": "http_lookup",
        "url": "http://crm.example.com/lookup",
        "store_as": "crm",
        "next": "hours",
        "fallback": "hours",
    }

    assert only_problem(raw) == FlowProblem(
        field="nodes.crm.url", message="must be an https:// URL"
    )


def test_a_menu_key_must_be_a_single_dtmf_key() -> None:
    raw = golden_flow()
    raw["nodes"]["menu"]["options"]["11"] = "sales_q"

    assert only_problem(raw) == FlowProblem(
        field="nodes.menu.options.11", message="invalid key: must be a single DTMF key: 0-9, * or #"
    )


@pytest.mark.parametrize("number", ["030 1234567", "+0301234567", "4930123456", "+4930123456\n"])
def test_a_transfer_needs_an_e164_number(number: str) -> None:
    raw = golden_flow()
    raw["nodes"]["menu"]["options"]["9"] = "out"
    raw["nodes"]["out"] = {"type": "transfer", "number": number}

    problem = only_problem(raw)

    assert problem.field == "nodes.out.number"
    assert problem.message.startswith("must be an E.164 number")


def test_a_transfer_to_an_e164_number_is_accepted() -> None:
    raw = golden_flow()
    raw["nodes"]["menu"]["options"]["9"] = "out"
    raw["nodes"]["out"] = {"type": "transfer", "number": "+4930123456", "caller_id": "caller"}

    assert problems_in(raw) == []


def test_a_flow_of_more_than_500_nodes_is_rejected() -> None:
    nodes = {f"n{i}": {"type": "play", "text": "hi", "next": f"n{i + 1}"} for i in range(500)}
    nodes["n500"] = {"type": "hangup"}

    assert only_problem({"start": "n0", "nodes": nodes}) == FlowProblem(
        field="nodes", message=f"a flow has at most {MAX_NODES} nodes, not 501"
    )
    del nodes["n500"], nodes["n499"]["next"]
    assert problems_in({"start": "n0", "nodes": nodes}) == []


def test_a_flow_without_nodes_is_rejected() -> None:
    assert only_problem({"start": "a", "nodes": {}}) == FlowProblem(
        field="nodes", message="a flow needs at least one node"
    )


def test_a_node_id_with_a_dot_or_a_trailing_newline_is_rejected() -> None:
    raw = golden_flow()
    raw["nodes"]["a.b"] = {"type": "hangup"}
    raw["nodes"]["bye\n"] = {"type": "hangup"}

    assert [p.field for p in problems_in(raw)] == ["nodes.a.b", "nodes.bye\n"]


def test_malformed_json_is_a_problem_with_the_whole_document() -> None:
    with pytest.raises(FlowInvalid) as caught:
        decode_flow(b'{"start": "a", "nodes": {')

    [problem] = caught.value.problems
    assert problem.field == ""
    assert problem.message.startswith("malformed JSON")


def test_every_bad_node_is_reported_not_just_the_first() -> None:
    raw = golden_flow()
    raw["extra"] = 1
    raw["nodes"]["welcome"]["text"] = "Welcome!"  # both prompt_id and text
    raw["nodes"]["menu"]["retries"] = 9
    raw["nodes"]["mailbox"] = {"type": "voicemail"}
    raw["nodes"]["support_set"]["skills"] = {"german": 2, "french": 11}

    assert problems_in(raw) == [
        FlowProblem(field="extra", message="unknown field"),
        FlowProblem(field="nodes.mailbox.mailbox", message="give either mailbox or queue_id"),
        FlowProblem(field="nodes.menu.retries", message="Expected `int` <= 5"),
        FlowProblem(field="nodes.support_set.skills.french", message="Expected `int` <= 10"),
        FlowProblem(field="nodes.welcome.text", message="give either prompt_id or text, not both"),
    ]


def test_a_gather_cannot_want_fewer_digits_at_most_than_at_least() -> None:
    raw = golden_flow()
    raw["nodes"]["menu"]["options"]["3"] = "account"
    raw["nodes"]["account"] = {
        "type": "gather",
        "text": "Enter your PIN.",
        "min_digits": 6,
        "max_digits": 4,
        "variable": "pin",
        "next": "support_q",
    }

    assert only_problem(raw) == FlowProblem(
        field="nodes.account.max_digits", message="must be at least min_digits"
    )


def test_a_document_built_in_code_is_held_to_the_same_rules() -> None:
    doc = FlowDocument(
        start="menu",
        nodes={
            "menu": MenuNode(text="Press 1.", options={"1": "menu"}, retries=9, failed="menu"),
        },
    )

    assert validate_flow(doc, queues=set(), prompts=set()) == [
        FlowProblem(field="nodes.menu.retries", message="Expected `int` <= 5")
    ]


def test_problems_come_sorted_by_field_and_once_each() -> None:
    raw = golden_flow()
    raw["nodes"]["sales_q"]["queue_id"] = str(OTHER_TENANTS_QUEUE)
    raw["nodes"]["welcome"]["prompt_id"] = str(OTHER_TENANTS_PROMPT)
    raw["nodes"]["menu"]["options"]["2"] = "nowhere"

    first = problems_in(raw)

    assert [p.field for p in first] == sorted(p.field for p in first)
    assert len(set(first)) == len(first)
    assert problems_in(copy.deepcopy(raw)) == first


# --- properties ---------------------------------------------------------------------------------

IDS = ["a", "b", "c", "d", "e", "f"]
KNOWN_PROMPT = WELCOME
_target = st.sampled_from([*IDS, "missing"])
_play = st.fixed_dictionaries(
    {
        "type": st.just("play"),
        "prompt_id": st.sampled_from([str(KNOWN_PROMPT), str(CLOSED_PROMPT)]),
    },
    optional={"next": _target},
)
_menu = st.fixed_dictionaries(
    {
        "type": st.just("menu"),
        "text": st.just("Press a key."),
        "options": st.dictionaries(st.sampled_from(list("0123456789*#")), _target, min_size=1),
        "failed": _target,
    },
    optional={"invalid": _target, "timeout": _target},
)
_hangup = st.fixed_dictionaries({"type": st.just("hangup")})
_graphs = st.fixed_dictionaries(
    {
        "start": _target,
        "nodes": st.dictionaries(
            st.sampled_from(IDS), st.one_of(_play, _menu, _hangup), min_size=1, max_size=6
        ),
    }
)


def _raw_edges(node: dict[str, Any]) -> list[str]:
    if node["type"] == "play":
        return [node["next"]] if "next" in node else []
    if node["type"] == "menu":
        return [*node["options"].values(), node["failed"]] + [
            node[branch] for branch in ("invalid", "timeout") if branch in node
        ]
    return []


def _independently_acceptable(raw: dict[str, Any]) -> bool:
    nodes: dict[str, dict[str, Any]] = raw["nodes"]
    if raw["start"] not in nodes:
        return False
    if any(target not in nodes for node in nodes.values() for target in _raw_edges(node)):
        return False
    reached, todo = {raw["start"]}, [raw["start"]]
    while todo:
        for target in _raw_edges(nodes[todo.pop()]):
            if target not in reached:
                reached.add(target)
                todo.append(target)
    if reached != set(nodes):
        return False
    if any(
        node.get("prompt_id", str(KNOWN_PROMPT)) != str(KNOWN_PROMPT) for node in nodes.values()
    ):
        return False
    # Only plays continue without input here: following `next` from any play must end.
    for node_id in nodes:
        current, steps = node_id, 0
        while nodes[current]["type"] == "play" and "next" in nodes[current]:
            current, steps = nodes[current]["next"], steps + 1
            if steps > len(nodes):
                return False
    return True


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(_graphs)
def test_random_graphs_never_crash_and_are_accepted_exactly_when_sound(raw: dict[str, Any]) -> None:
    doc = decode_flow(raw)

    problems = validate_flow(doc, queues=set(), prompts={KNOWN_PROMPT})

    assert all(isinstance(p, FlowProblem) and p.message for p in problems)
    assert (problems == []) == _independently_acceptable(raw), problems


_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=6)
    | st.sampled_from(["08:00", "24:00", "+4930123456", "https://x.test", str(SALES), "a", "b"]),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(["1", "#", "mon", "tue", "a", "x"]), inner, max_size=3)
    ),
    max_leaves=6,
)
_field_names = sorted({name for cls in get_args(Node) for name in cls.__struct_fields__})
_keys = st.sampled_from(["1", "#", "11", "sun", "funday", "colour", "Bad"]) | st.text(
    "ab1#*_ ", max_size=3
)
_random_node = st.builds(
    lambda kind, fields: {**fields, "type": kind} if kind is not None else fields,
    st.sampled_from([*NODE_TYPES, "teleport", None, 7]),
    st.dictionaries(st.sampled_from(_field_names), _json, max_size=4),
)


def _paths(value: object, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(value, dict):
        for key, inner in value.items():
            found += _paths(inner, (*prefix, key))
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            found += _paths(inner, (*prefix, index))
    return found


@st.composite
def _mutated_node(draw: st.DrawFn) -> Any:
    """One of the golden flow's nodes with one thing changed, somewhere inside it."""
    node = copy.deepcopy(draw(st.sampled_from(list(golden_flow()["nodes"].values()))))
    *parents, last = draw(st.sampled_from(_paths(node)[1:]))
    parent = node
    for step in parents:
        parent = parent[step]
    action = draw(st.sampled_from(["replace", "delete", "add"]))
    if action == "replace":
        parent[last] = draw(_json)
    elif action == "delete":
        del parent[last]
    elif isinstance(parent, dict):
        parent[draw(_keys)] = draw(_json)
    else:
        parent.append(draw(_json))
    return node


def _points_into(raw: Any, field: str) -> bool:
    """Whether everything but the last part of a problem's field path exists in the input."""
    for part in field.split(".")[:-1]:
        if isinstance(raw, dict) and part in raw:
            raw = raw[part]
        elif isinstance(raw, list) and part.isdigit() and int(part) < len(raw):
            raw = raw[int(part)]
        else:
            return False
    return True


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.fixed_dictionaries(
        {
            "start": st.sampled_from(["a", "b", "1x", 3]),
            "nodes": st.dictionaries(
                st.sampled_from(["a", "b", "c", "bad id"]),
                _mutated_node() | _random_node,
                max_size=4,
            ),
        }
    ),
    st.booleans(),
)
def test_any_json_gets_problems_on_real_fields_or_a_document_never_a_crash(
    raw: dict[str, Any], as_bytes: bool
) -> None:
    try:
        doc = decode_flow(msgspec.json.encode(raw) if as_bytes else raw)
    except FlowInvalid as exc:
        problems = exc.problems
    else:
        assert decode_flow(encode_flow(doc)) == doc
        assert isinstance(validate_flow(doc, queues=QUEUES, prompts=PROMPTS), list)
        return
    assert problems
    assert all(_points_into(raw, p.field) for p in problems), problems
