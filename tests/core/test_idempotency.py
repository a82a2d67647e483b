import pytest

from app.core.errors import InvalidIdempotencyKey
from app.core.idempotency import canonical_json, fingerprint, parse_key


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ("abc", "abc"),
        ('"abc"', "abc"),
        ("  abc ", "abc"),
        ('"a\\"b"', 'a"b'),
        ('"a\\\\b"', "a\\b"),
        ("order-42/v1:x", "order-42/v1:x"),
        ("x" * 255, "x" * 255),
    ],
)
def test_quoted_and_bare_forms_name_the_same_key(raw: str, key: str) -> None:
    assert parse_key(raw) == key


@pytest.mark.parametrize(
    "raw",
    [None, "", '""', "x" * 256, "a b", "caf\u00e9", '"abc', '"ab"c"', '"a\\x"', "tab\there"],
)
def test_missing_or_malformed_keys_are_refused(raw: str | None) -> None:
    with pytest.raises(InvalidIdempotencyKey) as info:
        parse_key(raw)
    assert info.value.status == 400


def test_fingerprint_ignores_key_order_and_number_spelling() -> None:
    a = {"target": "t", "payload": {"b": 1, "a": [1.0, "é"]}}
    b = {"payload": {"a": [1, "é"], "b": 1.0}, "target": "t"}
    assert fingerprint("t", a) == fingerprint("t", b)
    assert canonical_json(a) == canonical_json(b)


def test_fingerprint_tells_different_requests_apart() -> None:
    base = {"payload": {"a": 1}}
    assert fingerprint("t", base) != fingerprint("u", base)
    assert fingerprint("t", base) != fingerprint("t", {"payload": {"a": 2}})
    assert fingerprint("t", base) != fingerprint("t", {"payload": {"a": 1.5}})
