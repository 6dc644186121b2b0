"""Contacts: one per phone (E.164) in a tenant, found by phone, VIP or blocked; imported from CSV
(good rows applied, bad rows reported by line); every change an event; no tenant sees another's."""

from __future__ import annotations

import json
import uuid
from typing import Any

import asyncpg
import pytest

from runtime.db import tenant_tx
from tenancy.contacts import service as contacts
from tenancy.models import TenantId
from tests.conftest import Api

CSV_HEADERS = {"content-type": "text/csv"}

MIXED = """phone,name,vip,blocked,country,attr_tier,attr_account
+12125550101,Ann Example,yes,,,gold,A-1
(212) 555-0102,Bob Example,no,1,US,,A-2
555,Too Short,,,US,,
+12125550103,Cat Example,maybe,,,,
+12125550104,"Dee, ""The Boss""
Example",TRUE,false,,silver,A-4
+12125550101,Ann Again,,,,,
,No Phone,,,,,
+12125550105,Wrong Country,,,USA,,
+12125550106,Eve Example,0
+12125550107,Fay Example,,,,,
"""


async def _snapshot(conn: asyncpg.Connection) -> dict[str, Any]:
    contacts_rows = [dict(r) for r in await conn.fetch("select * from contacts order by id")]
    events = await conn.fetchval(
        "select count(*) from outbox where subject ~ '^tenant\\.[^.]+\\.contacts?\\.'"
    )
    return {"contacts": contacts_rows, "events": events}


async def _create(api: Api, who: dict[str, Any], **body: Any) -> Any:
    return await api.client.post("/v1/contacts", json=body, headers=who["auth"])


async def _import(api: Api, who: dict[str, Any], text: str | bytes, **headers: str) -> Any:
    content = text.encode() if isinstance(text, str) else text
    return await api.client.post(
        "/v1/contacts/import", content=content, headers={**who["auth"], **CSV_HEADERS, **headers}
    )


async def _list(api: Api, who: dict[str, Any], **params: Any) -> dict[str, Any]:
    r = await api.client.get("/v1/contacts", params=params, headers=who["auth"])
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def _problem(r: Any, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = r.json()
    return body


async def test_a_contact_is_created_read_changed_and_deleted(api: Api) -> None:
    owner = await api.signup_verified("owner@acme.test")
    r = await _create(
        api,
        owner,
        phone="(212) 555-0101",
        country="US",
        name="  Ann Example ",
        vip=True,
        attributes={"account": "A-1", "tier": "gold"},
    )
    assert r.status_code == 201, r.text
    ann = r.json()
    assert ann["phone"] == "+12125550101"
    assert (ann["name"], ann["vip"], ann["blocked"]) == ("Ann Example", True, False)
    assert ann["attributes"] == {"account": "A-1", "tier": "gold"}
    assert ann["created_at"] == ann["updated_at"]

    r = await api.client.get(f"/v1/contacts/{ann['id']}", headers=owner["auth"])
    assert r.json() == ann

    r = await api.client.patch(
        f"/v1/contacts/{ann['id']}",
        json={"blocked": True, "attributes": {"note": "rude"}, "phone": "+1 212-555-0199"},
        headers=owner["auth"],
    )
    assert r.status_code == 200, r.text
    changed = r.json()
    assert changed["phone"] == "+12125550199"
    assert (changed["name"], changed["vip"], changed["blocked"]) == ("Ann Example", True, True)
    assert changed["attributes"] == {"note": "rude"}  # the map is replaced, not merged
    assert changed["updated_at"] > ann["updated_at"]

    r = await api.client.delete(f"/v1/contacts/{ann['id']}", headers=owner["auth"])
    assert r.status_code == 204
    r = await api.client.get(f"/v1/contacts/{ann['id']}", headers=owner["auth"])
    assert _problem(r, 404)["code"] == "not-found"
    assert (await _list(api, owner))["data"] == []
    # Its phone is free again.
    assert (await _create(api, owner, phone="+12125550199")).status_code == 201


async def test_contacts_are_found_by_any_spelling_of_their_phone_and_by_vip_or_blocked(
    api: Api,
) -> None:
    owner = await api.signup_verified("owner@acme.test")
    ann = (await _create(api, owner, phone="+12125550101", vip=True)).json()
    bob = (await _create(api, owner, phone="+442079460102", blocked=True)).json()
    cat = (await _create(api, owner, phone="+12125550103", name="Cat")).json()

    async def phones(**params: Any) -> list[str]:
        return [c["phone"] for c in (await _list(api, owner, **params))["data"]]

    assert await phones(phone="(212) 555-0101", country="us") == ["+12125550101"]
    assert await phones(phone="020 7946 0102", country="GB") == ["+442079460102"]
    assert await phones(phone="+1 212 555 0103") == ["+12125550103"]
    assert await phones(phone="+12125550199") == []
    assert await phones(vip="true") == [ann["phone"]]
    assert await phones(blocked="true") == [bob["phone"]]
    assert await phones(vip="false", blocked="false") == [cat["phone"]]
    # Cursor pages, in id (creation) order, each contact once.
    ordered = [c["id"] for c in sorted([ann, bob, cat], key=lambda c: uuid.UUID(c["id"]))]
    first = await _list(api, owner, limit=2)
    assert [c["id"] for c in first["data"]] == ordered[:2]
    assert first["has_more"] is True
    rest = await _list(api, owner, limit=2, starting_after=ordered[1])
    assert [c["id"] for c in rest["data"]] == ordered[2:]
    assert rest["has_more"] is False
    # A lookup that is not a phone number says so, naming the parameter.
    r = await api.client.get("/v1/contacts", params={"phone": "555"}, headers=owner["auth"])
    assert _problem(r, 422)["errors"][0]["field"] == "phone"
    r = await api.client.get(
        "/v1/contacts", params={"phone": "2125550101", "country": "USA"}, headers=owner["auth"]
    )
    assert _problem(r, 422)["errors"][0]["field"] == "country"


async def test_a_second_contact_with_the_same_phone_is_a_conflict(
    api: Api, admin_conn: asyncpg.Connection
) -> None:
    owner = await api.signup_verified("owner@acme.test")
    ann = (await _create(api, owner, phone="+12125550101", name="Ann")).json()
    bob = (await _create(api, owner, phone="+12125550102", name="Bob")).json()
    before = await _snapshot(admin_conn)
    r = await _create(api, owner, phone="212-555-0101", country="US", name="Ann twice")
    body = _problem(r, 409)
    assert body["errors"][0]["field"] == "phone"
    assert ann["id"] in body["detail"]
    r = await api.client.patch(
        f"/v1/contacts/{bob['id']}", json={"phone": "+1 (212) 555-0101"}, headers=owner["auth"]
    )
    assert _problem(r, 409)["errors"][0]["field"] == "phone"
    assert await _snapshot(admin_conn) == before


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"phone": "555"}, "phone"),
        ({"phone": "not a number"}, "phone"),
        ({"phone": "2125550101"}, "phone"),  # national, no country
        ({"phone": "2125550101", "country": "USA"}, "country"),
        ({"phone": "+12125550101", "name": "x" * 201}, "name"),
        ({"phone": "+12125550101", "vip": "yes"}, "vip"),
        ({"phone": "+12125550101", "attributes": {"Tier": "gold"}}, "attributes"),
        ({"phone": "+12125550101", "attributes": {"tier": "x" * 1001}}, "attributes"),
        ({"phone": "+12125550101", "attributes": {"tier": 3}}, "attributes"),
        (
            {"phone": "+12125550101", "attributes": {f"k{i}": "v" for i in range(51)}},
            "attributes",
        ),
        ({"phone": "+12125550101", "email": "ann@example.test"}, "email"),
        ({"name": "Nobody"}, "phone"),
    ],
    ids=[
        "short-phone",
        "not-a-phone",
        "national-without-country",
        "bad-country",
        "long-name",
        "vip-not-bool",
        "attribute-key",
        "attribute-value-too-long",
        "attribute-value-not-text",
        "too-many-attributes",
        "unknown-field",
        "missing-phone",
    ],
)
async def test_bad_contact_fields_are_refused_naming_the_field_and_change_nothing(
    api: Api, admin_conn: asyncpg.Connection, body: dict[str, Any], field: str
) -> None:
    owner = await api.signup_verified("owner@acme.test")
    ann = (await _create(api, owner, phone="+12125550199", name="Ann")).json()
    before = await _snapshot(admin_conn)
    r = await _create(api, owner, **body)
    problem = _problem(r, 422)
    assert [e["field"].split("[")[0] for e in problem["errors"]] == [field], problem
    if "phone" in body:  # the same field refused the same way when changing a contact
        r = await api.client.patch(f"/v1/contacts/{ann['id']}", json=body, headers=owner["auth"])
        assert _problem(r, 422)["errors"][0]["field"].split("[")[0] == field
    assert await _snapshot(admin_conn) == before


async def test_country_is_refused_on_a_change_that_does_not_set_the_phone(api: Api) -> None:
    owner = await api.signup_verified("owner@acme.test")
    ann = (await _create(api, owner, phone="+12125550101")).json()
    r = await api.client.patch(
        f"/v1/contacts/{ann['id']}", json={"country": "GB"}, headers=owner["auth"]
    )
    assert _problem(r, 422)["errors"][0]["field"] == "country"
    r = await api.client.patch(
        f"/v1/contacts/{ann['id']}",
        json={"phone": "020 7946 0101", "country": "GB"},
        headers=owner["auth"],
    )
    assert r.json()["phone"] == "+442079460101"


async def test_an_import_applies_the_good_rows_and_reports_the_bad_ones_by_line(
    api: Api, admin_conn: asyncpg.Connection
) -> None:
    owner = await api.signup_verified("owner@acme.test")
    r = await _import(api, owner, MIXED)
    assert r.status_code == 200, r.text
    result = r.json()
    assert (result["created"], result["updated"], result["unchanged"]) == (4, 0, 0)
    assert [(e["line"], e["field"]) for e in result["errors"]] == [
        (4, "phone"),
        (5, "vip"),
        (8, "phone"),  # the same phone as line 2
        (9, "phone"),
        (10, "country"),
        (11, "row"),
    ]
    assert "555" in result["errors"][0]["message"]
    assert "line 2" in result["errors"][2]["message"]
    stored = {
        r["phone"]: r
        for r in await admin_conn.fetch(
            "select * from contacts where tenant_id = $1", uuid.UUID(owner["tenant_id"])
        )
    }
    assert sorted(stored) == ["+12125550101", "+12125550102", "+12125550104", "+12125550107"]
    ann = stored["+12125550101"]
    assert (ann["name"], ann["vip"], ann["blocked"]) == ("Ann Example", True, False)
    assert json.loads(ann["attributes"]) == {"tier": "gold", "account": "A-1"}
    bob = stored["+12125550102"]
    assert (bob["vip"], bob["blocked"]) == (False, True)
    assert json.loads(bob["attributes"]) == {"account": "A-2"}
    dee = stored["+12125550104"]
    assert dee["name"] == 'Dee, "The Boss"\nExample'
    assert (dee["vip"], dee["blocked"]) == (True, False)
    # The API shows what was imported.
    assert {c["phone"] for c in (await _list(api, owner, vip="true"))["data"]} == {
        "+12125550101",
        "+12125550104",
    }


async def test_importing_again_updates_contacts_instead_of_duplicating_them(
    api: Api, admin_conn: asyncpg.Connection
) -> None:
    owner = await api.signup_verified("owner@acme.test")
    first = (
        await _import(
            api,
            owner,
            "phone,name,vip,blocked,attr_tier,attr_account\n"
            "+12125550101,Ann,yes,no,gold,A-1\n"
            "+12125550102,Bob,no,no,,B-1\n",
        )
    ).json()
    assert (first["created"], first["updated"], first["errors"]) == (2, 0, [])
    ids = {r["phone"]: r["id"] for r in await admin_conn.fetch("select phone, id from contacts")}

    # The same file again changes nothing and creates nothing.
    again = (
        await _import(
            api,
            owner,
            "phone,name,vip,blocked,attr_tier,attr_account\n"
            "+12125550101,Ann,yes,no,gold,A-1\n"
            "+12125550102,Bob,no,no,,B-1\n",
        )
    ).json()
    assert (again["created"], again["updated"], again["unchanged"]) == (0, 0, 2)

    # A file with fewer columns updates only what it names; an empty attr_ cell removes it.
    update = (
        await _import(
            api,
            owner,
            "attr_tier,phone,blocked\nsilver,+1 212 555 0102,yes\n,+12125550101,\n"
            "bronze,+12125550103,\n",
        )
    ).json()
    assert (update["created"], update["updated"], update["unchanged"], update["errors"]) == (
        1,
        2,
        0,
        [],
    )
    rows = {r["phone"]: r for r in await admin_conn.fetch("select * from contacts")}
    assert len(rows) == 3
    assert {p: rows[p]["id"] for p in ids} == ids
    assert (rows["+12125550101"]["name"], rows["+12125550101"]["vip"]) == ("Ann", True)
    assert json.loads(rows["+12125550101"]["attributes"]) == {"account": "A-1"}
    assert rows["+12125550102"]["blocked"] is True
    assert json.loads(rows["+12125550102"]["attributes"]) == {"tier": "silver", "account": "B-1"}
    assert (rows["+12125550103"]["name"], rows["+12125550103"]["vip"]) == ("", False)


async def test_an_import_that_would_give_a_contact_too_many_attributes_reports_the_row(
    api: Api, admin_conn: asyncpg.Connection
) -> None:
    owner = await api.signup_verified("owner@acme.test")
    attributes = {f"k{i}": "v" for i in range(50)}
    assert (
        await _create(api, owner, phone="+12125550101", attributes=attributes)
    ).status_code == 201
    result = (
        await _import(api, owner, "phone,attr_extra\n+12125550101,x\n+12125550102,y\n")
    ).json()
    assert (result["created"], result["updated"]) == (1, 0)
    assert [(e["line"], e["field"]) for e in result["errors"]] == [(2, "attributes")]
    stored = await admin_conn.fetchval(
        "select attributes from contacts where phone = '+12125550101'"
    )
    assert json.loads(stored) == attributes


@pytest.mark.parametrize(
    ("content", "field"),
    [
        (b"", "body"),
        (b"\n\n", "body"),
        (b"phone,name,vip,blocked\n", "body"),
        (b"name,vip\nAnn,yes\n", "phone"),
        (b"phone,name,email\n+12125550101,Ann,ann@example.test\n", "email"),
        (b"phone,attr_1st\n+12125550101,gold\n", "attr_1st"),
        (b"phone,name,phone\n+12125550101,Ann,+12125550102\n", "phone"),
        (b'phone,name\n+12125550101,"Ann\n+12125550102,"Bob"x\n', "body"),
        ("phone,name\n+12125550101,Zoë\n".encode("latin-1"), "body"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "body"),
        (
            ("phone," + ",".join(f"attr_k{i}" for i in range(51)) + "\n+12125550101\n").encode(),
            "header",
        ),
    ],
    ids=[
        "empty",
        "blank-lines",
        "header-only",
        "no-phone-column",
        "unknown-column",
        "bad-attribute-column",
        "duplicate-column",
        "broken-quoting",
        "not-utf8",
        "binary",
        "too-many-attribute-columns",
    ],
)
async def test_an_unusable_file_is_refused_whole_and_stores_nothing(
    api: Api, admin_conn: asyncpg.Connection, content: bytes, field: str
) -> None:
    owner = await api.signup_verified("owner@acme.test")
    before = await _snapshot(admin_conn)
    r = await _import(api, owner, content)
    problem = _problem(r, 422)
    assert [e["field"] for e in problem["errors"]] == [field], problem
    assert await _snapshot(admin_conn) == before


async def test_an_import_must_be_a_csv_body_within_the_size_limit(
    api: Api, admin_conn: asyncpg.Connection
) -> None:
    owner = await api.signup_verified("owner@acme.test")
    before = await _snapshot(admin_conn)
    r = await api.client.post(
        "/v1/contacts/import", json={"phone": "+12125550101"}, headers=owner["auth"]
    )
    assert _problem(r, 415)["code"] == "unsupported-media-type"
    # Larger than the API's general body limit is fine for an import...
    row = "+12125550101,Ann,,,," + "x" * 900 + "\n"
    big = "phone,name,vip,blocked,country,attr_note\n" + row
    big += "".join(f"+1212555{i:04d},Ann,,,,{'x' * 900}\n" for i in range(200, 300))
    assert len(big) > api.settings.max_body_bytes
    r = await _import(api, owner, big)
    assert r.status_code == 200, r.text
    assert r.json()["created"] == 101
    # ...but not without bound.
    before = await _snapshot(admin_conn)
    huge = "phone,name\n" + "+12125550101,Ann\n" * 400_000
    r = await _import(api, owner, huge)
    _problem(r, 413)
    assert await _snapshot(admin_conn) == before


async def test_an_import_with_an_idempotency_key_is_applied_once(
    api: Api, admin_conn: asyncpg.Connection
) -> None:
    owner = await api.signup_verified("owner@acme.test")
    text = "phone,name\n+12125550101,Ann\n+12125550102,Bob\n"
    first = await _import(api, owner, text, **{"Idempotency-Key": "import-1"})
    again = await _import(api, owner, text, **{"Idempotency-Key": "import-1"})
    assert first.status_code == again.status_code == 200
    assert (
        first.json() == again.json() == {"created": 2, "updated": 0, "unchanged": 0, "errors": []}
    )
    assert again.headers.get("Idempotent-Replayed") == "true"
    imported = await admin_conn.fetchval(
        "select count(*) from outbox where subject like '%.contacts.%.imported'"
    )
    assert imported == 1


async def test_contact_changes_and_imports_are_events_in_the_outbox(
    api: Api, admin_conn: asyncpg.Connection
) -> None:
    owner = await api.signup_verified("owner@acme.test")
    tenant = owner["tenant_id"]
    ann = (await _create(api, owner, phone="+12125550101", vip=True)).json()
    await api.client.patch(
        f"/v1/contacts/{ann['id']}",
        json={"phone": "+12125550109", "blocked": True, "vip": True},
        headers=owner["auth"],
    )
    # A change that changes nothing is not an event.
    await api.client.patch(f"/v1/contacts/{ann['id']}", json={"vip": True}, headers=owner["auth"])
    await api.client.delete(f"/v1/contacts/{ann['id']}", headers=owner["auth"])
    await _import(api, owner, MIXED)
    rows = await admin_conn.fetch(
        """select subject, payload from outbox
           where subject like '%.contact.%' or subject like '%.contacts.%' order by id"""
    )
    prefix = f"tenant.{tenant}.contact.{ann['id']}"
    subjects = [r["subject"] for r in rows]
    assert subjects[:3] == [f"{prefix}.created", f"{prefix}.updated", f"{prefix}.deleted"]
    assert len(subjects) == 4  # the import is one event, not one per row
    assert subjects[3].startswith(f"tenant.{tenant}.contacts.")
    assert subjects[3].endswith(".imported")
    payloads = [json.loads(r["payload"]) for r in rows]
    assert payloads[0]["type"] == "contact.created"
    assert (payloads[0]["phone"], payloads[0]["vip"]) == ("+12125550101", True)
    assert payloads[1]["type"] == "contact.updated"
    assert payloads[1]["fields"] == ["blocked", "phone"]
    assert (payloads[1]["phone"], payloads[1]["previous_phone"]) == ("+12125550109", "+12125550101")
    assert payloads[2]["type"] == "contact.deleted"
    assert payloads[3]["type"] == "contacts.imported"
    assert (payloads[3]["created"], payloads[3]["updated"], payloads[3]["rejected"]) == (4, 0, 6)
    assert all(p["tenant_id"] == tenant for p in payloads)
    audit = await admin_conn.fetch("select action from audit_log where action like 'contact%'")
    assert sorted(a["action"] for a in audit) == [
        "contact.created",
        "contact.deleted",
        "contact.updated",
        "contacts.imported",
    ]


async def test_the_ivr_lookup_finds_a_caller_in_its_own_tenant_only(api: Api) -> None:
    a = await api.signup_verified("a@a.test", "A")
    b = await api.signup_verified("b@b.test", "B")
    await _import(api, a, "phone,name,vip,attr_crm_id\n+12125550101,Ann,yes,42\n")
    await _create(api, b, phone="+12125550102", blocked=True)
    tenant_a = TenantId(uuid.UUID(a["tenant_id"]))
    async with tenant_tx(api.pool, tenant_a) as conn:
        ann = await contacts.lookup(conn, tenant_a, "+12125550101")
        stranger = await contacts.lookup(conn, tenant_a, "+12125550102")
    assert ann is not None
    assert (ann.name, ann.vip, ann.blocked, ann.attributes) == (
        "Ann",
        True,
        False,
        {"crm_id": "42"},
    )
    assert stranger is None
    # Asking for A's caller under B's tenant finds nothing, whatever the code passes.
    tenant_b = TenantId(uuid.UUID(b["tenant_id"]))
    async with tenant_tx(api.pool, tenant_b) as conn:
        assert await contacts.lookup(conn, tenant_b, "+12125550101") is None
        assert await contacts.lookup(conn, tenant_a, "+12125550101") is None


async def test_another_tenants_contacts_are_404_and_unchanged(
    api: Api, admin_conn: asyncpg.Connection
) -> None:
    a = await api.signup_verified("a@a.test", "A")
    b = await api.signup_verified("b@b.test", "B")
    ann = (await _create(api, a, phone="+12125550101", name="Ann", vip=True)).json()
    before = [dict(r) for r in await admin_conn.fetch("select * from contacts order by id")]
    for method, path, body in [
        ("GET", f"/v1/contacts/{ann['id']}", None),
        ("PATCH", f"/v1/contacts/{ann['id']}", {"name": "Mine now", "blocked": True}),
        ("DELETE", f"/v1/contacts/{ann['id']}", None),
    ]:
        r = await api.client.request(method, path, json=body, headers=b["auth"])
        assert _problem(r, 404)["code"] == "not-found", (method, path)
    assert (await _list(api, b))["data"] == []
    assert (await _list(api, b, phone="+12125550101"))["data"] == []
    assert (await _list(api, b, vip="true"))["data"] == []
    assert [dict(r) for r in await admin_conn.fetch("select * from contacts order by id")] == before
    # The same phone is B's own contact, in B's tenant; importing it leaves A's alone.
    assert (await _create(api, b, phone="+12125550101", name="Bob's Ann")).status_code == 201
    result = (await _import(api, b, "phone,name,vip\n+12125550101,Imported by B,no\n")).json()
    assert (result["created"], result["updated"]) == (0, 1)
    r = await api.client.get(f"/v1/contacts/{ann['id']}", headers=a["auth"])
    assert (r.json()["name"], r.json()["vip"]) == ("Ann", True)
    a_rows = await admin_conn.fetch(
        "select * from contacts where tenant_id = $1", uuid.UUID(a["tenant_id"])
    )
    assert [dict(r) for r in a_rows] == before


async def test_contacts_need_the_contacts_permissions(api: Api) -> None:
    owner = await api.signup_verified("owner@acme.test")
    r = await api.client.post(
        "/v1/api-keys",
        json={"name": "reader", "scopes": ["contacts:read"]},
        headers=owner["auth"],
    )
    reader = {"auth": {"Authorization": f"Bearer {r.json()['secret']}"}}
    ann = (await _create(api, owner, phone="+12125550101")).json()
    assert [c["id"] for c in (await _list(api, reader))["data"]] == [ann["id"]]
    for method, path, body in [
        ("POST", "/v1/contacts", {"phone": "+12125550102"}),
        ("PATCH", f"/v1/contacts/{ann['id']}", {"vip": True}),
        ("DELETE", f"/v1/contacts/{ann['id']}", None),
    ]:
        r = await api.client.request(method, path, json=body, headers=reader["auth"])
        assert _problem(r, 403)["code"] == "forbidden", (method, path)
    r = await _import(api, reader, "phone\n+12125550102\n")
    assert _problem(r, 403)["code"] == "forbidden"
    assert [c["id"] for c in (await _list(api, owner))["data"]] == [ann["id"]]
