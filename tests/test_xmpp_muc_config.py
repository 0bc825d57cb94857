"""[xmpp] keys of MUC ↔ room chat: muc_domain (Chorus's own component), muc_secret,
conference_domain."""

from __future__ import annotations

import pytest

from control.config import ConfigError, parse_config


def test_muc_config_keys() -> None:
    base = {"component_jid": "sip.example.com", "component_secret": "s3cret"}
    xmpp = parse_config(
        {
            "xmpp": {
                **base,
                "muc_domain": "Conference.example.com",
                "conference_domain": "rooms.example.com",
            }
        }
    ).xmpp
    assert (xmpp.muc_domain, xmpp.muc_secret) == ("conference.example.com", "s3cret")
    assert xmpp.conference_domain == "rooms.example.com"
    own = parse_config({"xmpp": {**base, "muc_domain": "c.example.com", "muc_secret": "m"}}).xmpp
    assert own.muc_secret == "m"
    with pytest.raises(ConfigError) as error:
        parse_config({"xmpp": {**base, "muc_domain": "sip.example.com"}})
    assert error.value.key == "xmpp.muc_domain"
    with pytest.raises(ConfigError) as error:
        parse_config({"xmpp": {**base, "conference_domain": "not a domain"}})
    assert error.value.key == "xmpp.conference_domain"
