from __future__ import annotations

import pytest

from runtime.db import set_clause


def test_set_clause_numbers_parameters_after_the_key_and_applies_casts() -> None:
    assert set_clause(["name", "codecs"], allowed={"name", "codecs"}) == "name = $3, codecs = $4"
    assert set_clause(["codecs"], allowed={"codecs"}, casts={"codecs": "::text[]"}) == (
        "codecs = $3::text[]"
    )


@pytest.mark.parametrize("fields", [[], ["name", "tenant_id"], ["name; drop table users"]])
def test_set_clause_refuses_nothing_or_any_column_not_allowed(fields: list[str]) -> None:
    with pytest.raises(ValueError, match="cannot update"):
        set_clause(fields, allowed={"name"})
