"""Sans-IO SIP (RFC 3261): messages, transactions, dialogs, SDP; plus asyncio transports."""
