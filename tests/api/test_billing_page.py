"""The billing page's files: what the API serves, and that the page and its module agree."""

from __future__ import annotations

import re

from api.controllers.billing_page import CONTENT_SECURITY_POLICY, DIRECTORY, served_files
from tests.conftest import Api


async def test_the_page_and_its_modules_are_served_with_a_strict_policy(api: Api) -> None:
    r = await api.client.get("/billing/")
    assert r.status_code == 200
    assert r.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert "unsafe" not in CONTENT_SECURITY_POLICY
    assert r.content == (DIRECTORY / "index.html").read_bytes()
    for name in served_files():
        r = await api.client.get(f"/billing/{name}")
        assert r.status_code == 200, name
    # The sign-in module is the softphone's own.
    r = await api.client.get("/billing/auth.js")
    assert "class Session" in r.text
    assert (await api.client.get("/billing/../app.py")).status_code == 404
    assert (await api.client.get("/billing/missing.js")).status_code == 404


def test_every_element_the_script_looks_up_is_on_the_page() -> None:
    html = (DIRECTORY / "index.html").read_text()
    script = (DIRECTORY / "billing.js").read_text()
    ids = set(re.findall(r'id="([^"]+)"', html))
    wanted = set(re.findall(r'\$\("([^"]+)"\)', script))
    assert wanted, "the script looks nothing up"
    assert wanted <= ids, wanted - ids
    assert "<script>" not in html  # no inline script: the policy forbids it
