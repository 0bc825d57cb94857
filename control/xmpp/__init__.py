"""The SIP↔XMPP gateway (issue 12): an XEP-0114 component of Prosody built on slixmpp.

addressing.py maps SIP URIs and JIDs (RFC 7247, XEP-0106); messages.py maps SIP MESSAGE and
XMPP chat messages (RFC 7572); errors.py checks stanzas and answers what it cannot map with
RFC 6120 errors; chatsession.py (sans-IO) and chatgw.py carry one-to-one chat sessions, MSRP
on the SIP side (RFC 7573); component.py is the thin asyncio layer over slixmpp's
ComponentXMPP with reconnect back-off; app.py is the gateway's Application.
"""
