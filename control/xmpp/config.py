"""The `[xmpp]` section (control/xmpp's gateway) parsed into `XmppConfig`.

Kept out of control/config.py, which calls `parse_xmpp` for the section; the settings
dataclass itself stays in control/settings.py with every other section's.
"""

from __future__ import annotations

from control.configtable import Section, domain, host_port, ip_address
from control.settings import ConfigError, XmppConfig


def parse_xmpp(section: Section) -> XmppConfig:
    """The validated `[xmpp]` table; every key is checked and an unknown one refused."""
    default = XmppConfig()
    jid = section.take("component_jid", str, None)
    component = domain(section.key("component_jid"), jid) if jid is not None else None
    secret = section.take("component_secret", str, None)
    if component is not None and not secret:
        raise ConfigError(section.key("component_secret"), "required with component_jid")
    server_text = section.take("server", str, None)
    server = host_port(section.key("server"), server_text) if server_text else default.server
    sip_domains = tuple(
        domain(f"xmpp.sip_domains[{i}]", d)
        for i, d in enumerate(section.strings("sip_domains", default.sip_domains))
    )
    if component is not None and not sip_domains:
        sip_domains = (component,)
    xmpp_domains = tuple(
        domain(f"xmpp.xmpp_domains[{i}]", d)
        for i, d in enumerate(section.strings("xmpp_domains", default.xmpp_domains))
    )
    overlap = set(sip_domains) & set(xmpp_domains)
    if overlap:
        raise ConfigError(section.key("xmpp_domains"), f"{sorted(overlap)[0]} is on both sides")
    muc = section.take("muc_domain", str, None)
    muc_domain = domain(section.key("muc_domain"), muc) if muc is not None else None
    if muc_domain is not None and muc_domain in (component, *sip_domains, *xmpp_domains):
        raise ConfigError(section.key("muc_domain"), f"{muc_domain} is already another domain")
    muc_secret = section.take("muc_secret", str, None) or secret
    if muc_domain is not None and not muc_secret:
        raise ConfigError(section.key("muc_secret"), "required with muc_domain")
    rooms = section.take("conference_domain", str, None)
    config = XmppConfig(
        component_jid=component,
        component_secret=secret,
        server=server,
        sip_domains=sip_domains,
        xmpp_domains=xmpp_domains,
        muc_domain=muc_domain,
        muc_secret=muc_secret,
        conference_domain=(
            domain(section.key("conference_domain"), rooms) if rooms is not None else None
        ),
        reconnect_max=section.number("reconnect_max", default.reconnect_max, minimum=0.5),
        max_message_bytes=section.integer(
            "max_message_bytes", default.max_message_bytes, minimum=1024
        ),
        max_stanza_bytes=section.integer(
            "max_stanza_bytes", default.max_stanza_bytes, minimum=4096
        ),
        send_timeout=section.number("send_timeout", default.send_timeout, minimum=1.0),
        presence_expires=section.integer("presence_expires", default.presence_expires, minimum=60),
        presence_retry_max=section.number(
            "presence_retry_max", default.presence_retry_max, minimum=1.0
        ),
        max_presence_subscriptions=section.integer(
            "max_presence_subscriptions", default.max_presence_subscriptions, minimum=1
        ),
        chat_sessions=section.take("chat_sessions", bool, default.chat_sessions),
        chat_session_idle=section.number(
            "chat_session_idle", default.chat_session_idle, minimum=1.0
        ),
        max_chat_sessions=section.integer(
            "max_chat_sessions", default.max_chat_sessions, minimum=1
        ),
        max_jingle_calls=section.integer("max_jingle_calls", default.max_jingle_calls, minimum=1),
        jingle_ring_timeout=section.number(
            "jingle_ring_timeout", default.jingle_ring_timeout, minimum=1.0
        ),
        jingle_ice_addresses=tuple(
            ip_address(f"xmpp.jingle_ice_addresses[{i}]", a)
            for i, a in enumerate(
                section.strings("jingle_ice_addresses", default.jingle_ice_addresses)
            )
        ),
    )
    section.finish()
    if config.max_stanza_bytes <= config.max_message_bytes:
        raise ConfigError(
            section.key("max_stanza_bytes"),
            "must exceed max_message_bytes: a stanza holds the body",
        )
    return config
