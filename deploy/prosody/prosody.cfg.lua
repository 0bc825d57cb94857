-- Prosody for Chorus (issue 12): XMPP users of example.com, and the Chorus SIP<->XMPP gateway as
-- the XEP-0114 components sip.example.com (SIP users) and conference.example.com (rooms).
-- Prosody carries federation (S2S) with TLS and authenticated peers only; Chorus never speaks
-- S2S itself.
--
-- Every value that differs between deployments comes from the environment (Prosody's config
-- reads ENV_NAME as os.getenv("NAME")), with the production default after `or`. The tests
-- (tests/peers/prosody.py) run this same file with loopback, free ports and a tmp data dir.
-- Check it with: prosodyctl --config deploy/prosody/prosody.cfg.lua check config

local xmpp_domain = ENV_CHORUS_XMPP_DOMAIN or "example.com"
local component_domain = ENV_CHORUS_COMPONENT_JID or "sip.example.com"
local muc_domain = ENV_CHORUS_MUC_DOMAIN or "conference.example.com"
local interface = ENV_CHORUS_XMPP_INTERFACE or "*"

-- Root only in containers and tests; a packaged Prosody runs as the prosody user.
run_as_root = ENV_CHORUS_PROSODY_RUN_AS_ROOT == "1"
pidfile = ENV_CHORUS_PROSODY_PIDFILE or "/run/prosody/prosody.pid"
data_path = ENV_CHORUS_PROSODY_DATA or "/var/lib/prosody"
log = {
	{ levels = { min = ENV_CHORUS_PROSODY_LOG_LEVEL or "info" }, to = "file",
	  filename = ENV_CHORUS_PROSODY_LOG or "/var/log/prosody/prosody.log" };
}

admins = { }

modules_enabled = {
	"roster"; "saslauth"; "tls"; "dialback"; "disco"; "ping"; "time"; "version";
	"private"; "vcard4"; "carbons"; "pep"; "blocklist"; "limits";
}
modules_disabled = { }
allow_registration = false

interfaces = { interface }
c2s_ports = { tonumber(ENV_CHORUS_C2S_PORT) or 5222 }
s2s_ports = { tonumber(ENV_CHORUS_S2S_PORT) or 5269 }
-- No HTTP, no BOSH or WebSocket here: nothing asks for them.
http_ports = { }
https_ports = { }

-- Clients must encrypt before they authenticate.
c2s_require_encryption = true
-- Federation: TLS is mandatory and the remote server's certificate must be valid (no
-- dialback-only peers): S2S with mandatory TLS, as issue 12 asks.
s2s_require_encryption = true
s2s_secure_auth = true

authentication = "internal_hashed"
storage = "internal"

-- Stanza and bandwidth limits, so one client cannot flood the server or the gateway.
limits = {
	c2s = { rate = "10kb/s"; burst = "2s" };
	s2sin = { rate = "30kb/s"; burst = "2s" };
}
c2s_stanza_size_limit = 256 * 1024
s2s_stanza_size_limit = 512 * 1024

-- XEP-0114 components connect on loopback only (the gateway runs on this machine).
component_ports = { tonumber(ENV_CHORUS_COMPONENT_PORT) or 5347 }
component_interfaces = { ENV_CHORUS_COMPONENT_INTERFACE or "127.0.0.1" }

certificates = ENV_CHORUS_PROSODY_CERTS or "/etc/prosody/certs"
ssl = {
	certificate = ENV_CHORUS_TLS_CERT or "/etc/prosody/certs/example.com.crt";
	key = ENV_CHORUS_TLS_KEY or "/etc/prosody/certs/example.com.key";
}

VirtualHost (xmpp_domain)

-- The Chorus gateway: `chorus serve` with [xmpp] component_jid = this name and
-- component_secret = the same secret connects here.
Component (component_domain)
	component_secret = ENV_CHORUS_COMPONENT_SECRET

-- MUC: the conference rooms themselves (RFC 7702). Chorus serves this domain as a second
-- XEP-0114 component ([xmpp] muc_domain, muc_secret): room@muc_domain IS the SIP conference
-- room@<[xmpp] conference_domain>, its occupants the room's participants. Not Prosody's own
-- "muc" module: that would keep rooms of its own, a second roster beside the conference's.
Component (muc_domain)
	component_secret = ENV_CHORUS_MUC_SECRET or ENV_CHORUS_COMPONENT_SECRET
