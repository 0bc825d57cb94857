"""Signed URL tokens (control/web/tokens.py): bound to purpose, room and subject, expiring,
and the secret generated once into the spool with mode 0600."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from control.config import ConfigError, parse_config
from control.web import TokenError, TokenPurpose, TokenSigner, load_secret

SIGNER = TokenSigner(b"k" * 32, ttl=60.0)
ROOM = "team@conference.example.com"


def test_a_token_opens_what_it_was_issued_for_until_it_expires() -> None:
    token = SIGNER.issue(TokenPurpose.SCREEN, ROOM, "alice", now=1000.0)
    SIGNER.verify(token, TokenPurpose.SCREEN, ROOM, "alice", now=1000.0)
    SIGNER.verify(token, TokenPurpose.SCREEN, ROOM, "alice", now=1060.0)  # the last second
    with pytest.raises(TokenError, match="expired"):
        SIGNER.verify(token, TokenPurpose.SCREEN, ROOM, "alice", now=1061.0)


@pytest.mark.parametrize(
    ("purpose", "room", "subject"),
    [
        (TokenPurpose.SCREEN, ROOM, "bob"),  # another participant
        (TokenPurpose.SCREEN, "other@conference.example.com", "alice"),  # another room
        (TokenPurpose.FILE, ROOM, "alice"),  # another purpose
        (TokenPurpose.ROOM, ROOM, ""),
    ],
)
def test_a_token_opens_nothing_else(purpose: TokenPurpose, room: str, subject: str) -> None:
    token = SIGNER.issue(TokenPurpose.SCREEN, ROOM, "alice", now=0.0)
    with pytest.raises(TokenError):
        SIGNER.verify(token, purpose, room, subject, now=0.0)


def test_fields_cannot_be_shifted_between_room_and_subject() -> None:
    token = SIGNER.issue(TokenPurpose.SCREEN, "ab", "c", now=0.0)
    with pytest.raises(TokenError):
        SIGNER.verify(token, TokenPurpose.SCREEN, "a", "bc", now=0.0)


@pytest.mark.parametrize(
    "token",
    [None, "", "garbage", "123", "123.", ".abc", "99999999999999.abc", "1.!!!!", "1." + "A" * 43],
)
def test_malformed_or_forged_tokens_are_refused(token: str | None) -> None:
    with pytest.raises(TokenError):
        SIGNER.verify(token, TokenPurpose.ROOM, ROOM, now=0.0)


def test_a_longer_expiry_cannot_be_grafted_on() -> None:
    token = SIGNER.issue(TokenPurpose.ROOM, ROOM, now=0.0)
    _, mac = token.split(".")
    with pytest.raises(TokenError):
        SIGNER.verify(f"999999.{mac}", TokenPurpose.ROOM, ROOM, now=100.0)


def test_another_secret_does_not_verify() -> None:
    token = SIGNER.issue(TokenPurpose.ROOM, ROOM, now=0.0)
    with pytest.raises(TokenError):
        TokenSigner(b"x" * 32, 60.0).verify(token, TokenPurpose.ROOM, ROOM, now=0.0)


def test_secret_generated_once_into_the_spool_with_mode_0600(tmp_path: Path) -> None:
    first = load_secret(None, tmp_path)
    path = tmp_path / "web" / "token_secret"
    assert len(first) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_secret(None, tmp_path) == first  # kept across restarts
    assert load_secret("a configured secret", tmp_path) == b"a configured secret"
    path.write_text("not hex\n")
    with pytest.raises(ValueError, match="token_secret"):
        load_secret(None, tmp_path)  # a damaged secret is reported, never replaced


def test_web_config_keys() -> None:
    config = parse_config(
        {
            "web": {
                "listen": "https:0.0.0.0:8443",
                "public_url": "https://conf.example.com/",
                "token_secret": "s" * 20,
                "token_ttl": 120,
            },
            "screen": {"idle_timeout": 2.5, "max_frame_bytes": 100000, "max_width": 1920},
        }
    )
    assert config.web.listen is not None and config.web.listen.port == 8443
    assert config.web.public_url == "https://conf.example.com"
    assert config.web.token_ttl == 120.0
    assert (config.screen.idle_timeout, config.screen.max_width) == (2.5, 1920)
    assert parse_config({}).web.listen is None  # off unless configured
    with pytest.raises(ConfigError, match="web.listen"):
        parse_config({"web": {"listen": "http:0.0.0.0:8080"}})  # plain http off loopback
    with pytest.raises(ConfigError, match="web.token_secret"):
        parse_config({"web": {"token_secret": "short"}})
