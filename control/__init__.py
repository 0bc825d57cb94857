"""Chorus: a SIP conference application server (the RFC 4353 focus), XMPP gateway and echo."""

__version__ = "0.1.0"
