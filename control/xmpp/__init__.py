"""The SIP↔XMPP gateway (issue 12): an XEP-0114 component of Prosody built on slixmpp.

addressing.py maps SIP URIs and JIDs (RFC 7247, XEP-0106); messages.py maps SIP MESSAGE and
XMPP chat messages (RFC 7572); component.py is the thin asyncio layer over slixmpp's
ComponentXMPP with reconnect back-off; app.py is the gateway's Application.
"""
