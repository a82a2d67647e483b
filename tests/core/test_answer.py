"""What is kept of a target's answer, whatever bytes it held."""

from __future__ import annotations

from app.core import answer


def test_nul_and_invalid_utf8_become_replacement_characters() -> None:
    assert answer.excerpt(b"ok\x00\xff\xfe{}") == "ok\ufffd\ufffd\ufffd{}"


def test_an_empty_answer_has_no_excerpt() -> None:
    assert answer.excerpt(b"") is None


def test_the_excerpt_is_cut_to_its_limit() -> None:
    assert answer.excerpt(b"x" * 5000, 2048) == "x" * 2048


def test_a_lone_surrogate_cannot_reach_the_database() -> None:
    assert answer.storable("a\udc80b", 10) == "a\ufffdb"


def test_the_length_is_the_declared_one_when_it_is_a_number() -> None:
    assert answer.length({"Content-Length": "70000"}, b"x" * 10) == 70000
    assert answer.length({"Content-Length": "junk"}, b"x" * 10) == 10
    assert answer.length({}, b"xyz") == 3
    # a declared length shorter than what came is not believed
    assert answer.length({"Content-Length": "1"}, b"xyz") == 3


def test_the_media_type_is_kept_as_sent() -> None:
    assert answer.media_type({"Content-Type": " text/plain; charset=latin-1 "}) == (
        "text/plain; charset=latin-1"
    )
    assert answer.media_type({}) is None


def test_a_length_past_any_column_is_clamped() -> None:
    assert answer.length({"Content-Length": "9" * 30}, b"") == 0  # not a length
    assert answer.length({"Content-Length": str(2**63)}, b"") == answer.MAX_LENGTH
