"""Stripe's form encoding: bracket keys (`a[b]=1`, `items[0][price]=x`, `keys[]=k`) decoded
into nested dicts and lists, the way Stripe's own servers read the SDK's requests."""

import re
from typing import Any
from urllib.parse import parse_qsl

_KEY = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")
_SEGMENT = re.compile(r"\[([^\[\]]*)\]")


class FormError(ValueError):
    pass


def parse_form(raw: bytes | str) -> dict[str, Any]:
    """Decode an `application/x-www-form-urlencoded` body or a query string."""
    text = raw.decode() if isinstance(raw, bytes) else raw
    try:
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=False)
    except ValueError as exc:
        raise FormError(str(exc)) from exc
    return decode_pairs(pairs)


def decode_pairs(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    root: dict[str, Any] = {}
    for key, value in pairs:
        match = _KEY.match(key)
        path = [match.group(1), *_SEGMENT.findall(match.group(2))] if match else [key]
        node = root
        for depth, segment in enumerate(path):
            last = depth == len(path) - 1
            if segment == "":
                # `keys[]`: append in order; a number keeps the later list conversion simple.
                segment = str(len(node))
            if last:
                if isinstance(node.get(segment), dict):
                    raise FormError(f"Invalid parameter: {key} is both a value and an object.")
                node[segment] = value
                break
            child = node.setdefault(segment, {})
            if not isinstance(child, dict):
                raise FormError(f"Invalid parameter: {key} is both a value and an object.")
            node = child
    return _listify(root)


def _listify(node: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in node.items():
        if isinstance(value, dict):
            value = _listify(value)
            if value and all(k.isdigit() for k in value):
                value = [value[k] for k in sorted(value, key=int)]
        out[key] = value
    return out
