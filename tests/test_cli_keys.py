"""``csjd keys``: a new token, and the lines that configure it, work as printed."""

from __future__ import annotations

import io

import pytest
import yaml

from app.cli import main
from app.core.access import Keyring, KeyRole, parse_keys, parse_keys_document


def test_a_new_key_configures_either_way(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys", "new", "billing-svc", "--role", "admin"]) == 0
    out = capsys.readouterr().out.splitlines()
    token = out[0].rsplit(" ", 1)[1]
    assert token.startswith("csjd_") and len(token) > 40
    env_entry = out[1].removeprefix("CSJD_API_KEYS entry: ")
    from_env = Keyring(parse_keys(env_entry)).identify(token)
    document = yaml.safe_load("\n".join(out[3:]))
    from_file = Keyring(parse_keys_document(document, "keys.yaml")).identify(token)
    for key in (from_env, from_file):
        assert key is not None and (key.name, key.role) == ("billing-svc", KeyRole.ADMIN)
    assert token not in "\n".join(out[3:])


def test_two_new_keys_differ(capsys: pytest.CaptureFixture[str]) -> None:
    main(["keys", "new", "a"])
    main(["keys", "new", "a"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] != lines[6]


def test_hash_prints_what_the_keys_file_holds(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("some-token\n"))
    assert main(["keys", "hash"]) == 0
    digest = capsys.readouterr().out.strip()
    keys = parse_keys_document([{"name": "a", "role": "producer", "token_sha256": digest}], "f")
    assert Keyring(keys).identify("some-token") is not None


def test_bad_input_is_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["keys", "new", "not a name"]) == 2
    assert "not a valid key name" in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin", io.StringIO("\n"))
    assert main(["keys", "hash"]) == 2
    assert "standard input" in capsys.readouterr().err
