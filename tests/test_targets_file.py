"""``CSJD_TARGETS_FILE``: a broken entry stops the start, saying where without saying secrets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.config import ConfigError, load_targets_file
from tests.conftest import make_settings

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SHORT = "whsec_c2hvcnQ="
HEADER_VALUE = "header-value-6f8f57715090da26"


@pytest.mark.parametrize(
    ("fields", "where"),
    [
        ({"secret": f"{SECRET} {SHORT}"}, "secret"),
        ({"secret": SECRET, "headers": {"Host": HEADER_VALUE}}, "headers"),
    ],
)
async def test_a_bad_entry_names_the_field_and_repeats_no_secret(
    tmp_path: Path, db_url: str, fields: dict[str, object], where: str
) -> None:
    path = tmp_path / "targets.json"
    path.write_text(json.dumps([{"name": "billing", "url": "https://example.com/h", **fields}]))
    with pytest.raises(ConfigError) as raised:
        await load_targets_file(path, None, make_settings(db_url), 0.0)  # type: ignore[arg-type]
    message = str(raised.value)
    assert "target 'billing'" in message and where in message
    for secret in (SECRET, SHORT, "c2hvcnQ", HEADER_VALUE):
        assert secret not in message
