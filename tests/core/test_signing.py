"""Signatures, checked against the Standard Webhooks example and its reference verifier."""

from __future__ import annotations

import re
import time

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from app.core.signing import decode_secret, decode_secrets, sign

OLD = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
NEW = "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
STRANGER = "whsec_" + "A" * 43 + "="
BODY = b'{"amount":42,"items":["a","\xc3\xa9"]}'


def headers(msg_id: str, timestamp: int, signature: str) -> dict[str, str]:
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature,
    }


def test_signature_matches_the_standard_webhooks_example() -> None:
    # the example of the Standard Webhooks specification
    body = b'{"test": 2432232314}'
    assert sign(OLD, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body) == (
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    )


def test_a_rotating_target_signs_once_per_secret_in_order() -> None:
    now = int(time.time())
    both = sign(f"{NEW} {OLD}", "msg_1", now, BODY)
    assert both.split(" ") == [sign(NEW, "msg_1", now, BODY), sign(OLD, "msg_1", now, BODY)]
    for secret in (NEW, OLD):
        # a consumer that knows only one of the secrets accepts the delivery
        assert Webhook(secret).verify(BODY, headers("msg_1", now, both)) == {
            "amount": 42,
            "items": ["a", "é"],
        }
    with pytest.raises(WebhookVerificationError):
        Webhook(STRANGER).verify(BODY, headers("msg_1", now, both))


def test_the_signature_covers_id_timestamp_and_body() -> None:
    now = int(time.time())
    signature = sign(OLD, "msg_1", now, BODY)
    for msg_id, timestamp, body in (
        ("msg_2", now, BODY),
        ("msg_1", now + 1, BODY),
        ("msg_1", now, BODY.replace(b"42", b"43")),
    ):
        with pytest.raises(WebhookVerificationError):
            Webhook(OLD).verify(body, headers(msg_id, timestamp, signature))


@pytest.mark.parametrize("secret", ["nope", "whsec_!!!", "whsec_c2hvcnQ="])
def test_bad_secrets_are_refused(secret: str) -> None:
    with pytest.raises(ValueError, match="secret"):
        decode_secret(secret)


def test_several_secrets_decode_each_and_spaces_around_them_do_not_matter() -> None:
    assert decode_secrets(f" {NEW}  {OLD} ") == [decode_secret(NEW), decode_secret(OLD)]


@pytest.mark.parametrize(
    ("secrets", "message"),
    [
        (f"{NEW} whsec_c2hvcnQ=", "secret 2 of 2: a secret holds at least 24 bytes"),
        (f"plain {OLD}", "secret 1 of 2: a secret starts with 'whsec_'"),
        ("   ", "give at least one secret"),
    ],
)
def test_one_bad_secret_in_the_list_is_named_by_position(secrets: str, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        decode_secrets(secrets)
