"""The typed settings every component reads: one frozen dataclass per TOML section, each
default serving on 127.0.0.1. control/config.py turns a TOML file into them, validating
each key; components import only this shape, never the parser.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

from control.sip.transaction import Timers


class ConfigError(Exception):
    """A bad configuration value; the message starts with the dotted key."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key


TRANSPORTS = ("udp", "tcp", "tls")


@dataclass(frozen=True, slots=True)
class ListenAddress:
    transport: str
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.transport}:{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class SipConfig:
    listen: tuple[ListenAddress, ...] = (
        ListenAddress("udp", "127.0.0.1", 5060),
        ListenAddress("tcp", "127.0.0.1", 5060),
        ListenAddress("tls", "127.0.0.1", 5061),
    )
    advertised_address: str | None = None
    outbound_proxy: str | None = None
    trusted_peers: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = (
        ipaddress.ip_network("127.0.0.0/8"),
        ipaddress.ip_network("::1/128"),
    )
    timers: Timers = Timers()
    max_message_bytes: int = 65536
    max_connections: int = 1024
    connection_idle_timeout: float = 300.0
    max_sessions: int = 2000
    session_expires: int = 1800  # RFC 4028 interval we ask for and grant, seconds
    min_se: int = 90  # smallest Session-Expires accepted (422 below); RFC 4028's floor is 90
    subscription_max_expires: int = 3600  # RFC 6665 §4.2.1.1: longer Expires are shortened
    subscription_min_expires: int = 60  # shorter (but not 0) is 423 with this Min-Expires
    max_subscriptions_per_source: int = 100  # live subscriptions per source IP; more get 503
    overload_lag_ms: int = 0  # smoothed event-loop lag that sheds new requests (503); 0: off
    overload_retry_after: int = 2  # Retry-After of those 503s, seconds


@dataclass(frozen=True, slots=True)
class RtpConfig:
    port_range: tuple[int, int] = (50000, 50999)
    timeout: float = 30.0
    codecs: tuple[str, ...] = ("G722", "PCMU", "PCMA", "telephone-event")
    srtp: str = "optional"
    mixer_workers: int = 0
    failure_ticks: int = 100  # a room or listener whose mixing fails this many 20 ms ticks is ended
    rtcp_interval: float = 5.0  # RFC 3550 §6.2 minimum RTCP report interval, seconds
    native_media: bool = True  # the mixer's C media loop (control/media/native); false: Python
    opus_complexity: int = 5  # libopus encoder complexity 0-10 (CPU per Opus listener)


@dataclass(frozen=True, slots=True)
class TlsConfig:
    certificate: Path | None = None
    private_key: Path | None = None


@dataclass(frozen=True, slots=True)
class ServerConfig:
    spool_dir: Path = Path("spool")
    log_level: str = "INFO"
    log_format: str = "text"  # "text" lines or "json" objects, one a line (control/logs.py)
    trace_sip: Path | None = None
    trace_msrp: Path | None = None
    shutdown_timeout: float = 5.0
    event_loop: str = "asyncio"  # or "uvloop" (libuv's loop: less CPU per SIP call)
    gc_threshold: int = 10000  # allocations between young-generation collections (Python: 700)


@dataclass(frozen=True, slots=True)
class ApplicationsConfig:
    default: str = "conference"
    map: dict[str, str] = field(default_factory=lambda: {"echo": "echo"})


@dataclass(frozen=True, slots=True)
class RoomConfig:
    """One ``[conference.rooms.NAME]`` table: a room's moderation when it opens."""

    pin: str | None = None  # 1-32 of 0-9 * A-D: ?pin= in the Request-URI or keyed (RFC 4733)
    locked: bool = False  # new joins refused 403
    private_messages: bool = True  # False: the room chat refuses private messages 403
    moderators: tuple[str, ...] = ()  # URI patterns (fnmatch) that moderate this room


@dataclass(frozen=True, slots=True)
class ConferenceConfig:
    max_rooms: int = 1000
    max_participants: int = 100
    history_messages: int = 20  # replayed to a new chat stream, per room
    history_max_age: float = 604800.0  # seconds: nothing older is replayed or kept
    chat_rate: float = 20.0  # messages a second per participant (token bucket)
    chat_burst: int = 50  # messages a participant may send at once
    store_private: bool = False  # keep private messages (RFC 7701 §7) in the history store
    max_message_bytes: int = 1024 * 1024  # one chat message (MSRP or SIP MESSAGE) in a room
    moderators: tuple[str, ...] = ()  # URI patterns (fnmatch) that moderate every room
    creator_moderates: bool = True  # a room's first joiner moderates it
    pin_attempts: int = 3  # wrong PINs keyed before the caller is ended
    info_interval: float = 1.0  # seconds between two conference-info NOTIFYs of a subscription
    info_max_subscriptions: int = 100  # conference-info subscriptions one room takes (503 beyond)
    rooms: dict[str, RoomConfig] = field(default_factory=dict)  # by room user part or id
    refer_policy: str = "moderators"  # who may add people by REFER: or "participants"
    refer_allow: tuple[str, ...] = ()  # targets a REFER may dial; none: the node's own hosts
    refer_timeout: float = 60.0  # seconds a REFER's target may ring (then CANCEL, 408)
    refer_max_pending: int = 10  # REFER dial-outs of one room ringing at once (486 beyond)


@dataclass(frozen=True, slots=True)
class EchoConfig:
    session_limit: float = 600.0


@dataclass(frozen=True, slots=True)
class MsrpConfig:
    """MSRP (RFC 4975): one listening port per transport; sessions share them by path."""

    listen: tuple[ListenAddress, ...] = (
        ListenAddress("tls", "127.0.0.1", 2855),
        ListenAddress("tcp", "127.0.0.1", 2856),
    )
    max_message_bytes: int = 16 * 1024 * 1024
    max_chunk_bytes: int = 64 * 1024 * 1024
    connect_timeout: float = 30.0
    idle_timeout: float = 3600.0


@dataclass(frozen=True, slots=True)
class FilesConfig:
    """File transfer (RFC 5547): echo's files land in ``<spool_dir>/files``, rooms' files in
    ``<spool_dir>/rooms/files`` (control/files/rooms.py), each at most ``max_file_bytes``.
    For the room limits and retention, 0 means none."""

    max_file_bytes: int = 100 * 1024 * 1024
    room_quota_bytes: int = 1024 * 1024 * 1024  # sum of a room's files; a push past it: 413
    retain_max_age: float = 0.0  # seconds: older room files are deleted by the retention timer
    retain_room_bytes: int = 0  # retention deletes a room's oldest files down to this total
    push_to_participants: bool = False  # offer each new room file to every participant
    push_concurrency: int = 4  # pushes of one room running at once (the rest wait their turn)
    push_timeout: float = 600.0  # seconds one push may take (INVITE, connect, send, 200)
    after_room_ends: str = "keep"  # "keep" or "delete" the room's files when it ends
    retention_interval: float = 3600.0  # seconds between retention runs (none at start-up)


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    """Cluster mode behind a Kamailio edge (control/cluster.py): on when `kamailio_rpc` is set.

    The node registers `node_uri` in dispatcher set `dispatcher_set`, pins each live room to
    itself in Kamailio htable `htable` (entries expire after `pin_expiry` seconds unless
    refreshed, a safety net for a node that died), and drains before it stops.
    """

    kamailio_rpc: str | None = None
    node_uri: str | None = None  # None: sip:<first SIP listen address> (see node_sip_uri)
    dispatcher_set: int = 1
    htable: str = "rooms"  # must be the pin table kamailio.cfg reads
    pin_expiry: float = 3600.0
    rpc_timeout: float = 2.0
    drain_timeout: float = 3600.0  # SIGTERM waits this long for rooms to empty, then stops
    drain_exit: bool = True  # after `chorus drain`, exit once the last room has ended
    pid_file: Path | None = None  # None: <spool_dir>/chorus.pid, read by `chorus drain`

    @property
    def enabled(self) -> bool:
        return self.kamailio_rpc is not None


WEB_SCHEMES = ("http", "https")


@dataclass(frozen=True, slots=True)
class WebConfig:
    """The web server (control/web): screen viewer, room pages, file downloads.

    Off unless `listen` is set; plain HTTP only on a loopback address (behind a local proxy).
    """

    listen: ListenAddress | None = None  # transport is "http" or "https"
    public_url: str | None = None  # base of the URLs we hand out, when behind a proxy
    token_secret: str | None = None  # None: generated into <spool_dir>/web/token_secret
    token_ttl: float = 86400.0  # seconds a signed URL stays valid
    metrics_public: bool = False  # /metrics without the admin API's bearer token


@dataclass(frozen=True, slots=True)
class ApiConfig:
    """The admin API (control/web/api.py) and the CLI that talks to it.

    On by default, on loopback only; port 0 takes a free port, written with the URL into
    ``<spool_dir>/api/url`` for the CLI. The token is ``token``, else generated into
    ``<spool_dir>/api/token`` (mode 0600; ``chorus api-token`` prints it).
    """

    enabled: bool = True
    listen: ListenAddress = ListenAddress("http", "127.0.0.1", 0)
    token: str | None = None


@dataclass(frozen=True, slots=True)
class ScreenConfig:
    """Screen sharing (com.ag-projects.screen-sharing): limits on each JPEG frame."""

    idle_timeout: float = 30.0  # seconds without a frame before sharing ends
    max_frame_bytes: int = 4 * 1024 * 1024
    max_width: int = 7680
    max_height: int = 4320


AUDIO_ENGINES = ("embedded", "freeswitch")


@dataclass(frozen=True, slots=True)
class AudioConfig:
    """Which AudioEngine mixes rooms: the in-process mixer or a FreeSWITCH pool."""

    engine: str = "embedded"


@dataclass(frozen=True, slots=True)
class FreeSwitchNode:
    """One FreeSWITCH node: its SIP profile (where the audio legs go) and its Event Socket."""

    sip_host: str
    sip_port: int
    esl_host: str
    esl_port: int
    password: str

    @property
    def name(self) -> str:
        return f"{self.sip_host}:{self.sip_port}"


@dataclass(frozen=True, slots=True)
class FreeSwitchConfig:
    """The FreeSWITCH pool (control/media/freeswitch) used when ``[audio] engine`` says so."""

    nodes: tuple[FreeSwitchNode, ...] = ()
    answer_timeout: float = 10.0  # seconds for a node to answer a leg's INVITE
    health_interval: float = 5.0  # seconds between ESL `api status` probes of a node
    failover_after: float = 5.0  # seconds a node may be unreachable before its rooms move
    reconnect_max: float = 30.0  # ESL reconnect back-off cap, seconds (starts at 0.5, doubles)


@dataclass(frozen=True, slots=True)
class XmppConfig:
    """The SIP↔XMPP gateway (control/xmpp): an XEP-0114 component of Prosody or ejabberd.

    Off unless ``component_jid`` is set. ``sip_domains`` are the SIP users' domains XMPP users
    reach through the component (default: the component's own domain, the one the XMPP
    server routes to us); ``xmpp_domains`` the XMPP domains SIP users reach (SIP requests to
    them go to the gateway). Anything else is refused on both sides.
    """

    component_jid: str | None = None
    component_secret: str | None = None
    server: tuple[str, int] = ("127.0.0.1", 5347)  # the XMPP server's component port
    sip_domains: tuple[str, ...] = ()
    xmpp_domains: tuple[str, ...] = ()
    muc_domain: str | None = None  # served by Chorus as its own XEP-0114 component
    muc_secret: str | None = None  # that component's secret (default: component_secret)
    conference_domain: str | None = None  # SIP host of the rooms (default: the media host)
    reconnect_max: float = 30.0  # reconnect back-off cap, seconds (starts at 0.5, doubles)
    max_message_bytes: int = 65536  # one message body either way; larger is refused
    max_stanza_bytes: int = 262144  # one XMPP stanza as serialised; larger: policy-violation
    send_timeout: float = 30.0  # seconds a SIP MESSAGE we send may take before it is a failure
    presence_expires: int = 3600  # Expires of the presence SUBSCRIBEs toward SIP users
    presence_retry_max: float = 300.0  # cap of the retry delay toward a failing SIP side
    max_presence_subscriptions: int = 10000  # per direction: SIP watchers, XMPP subscribers
    chat_sessions: bool = False  # XMPP chats to SIP users as MSRP sessions (RFC 7573), not MESSAGE
    chat_session_idle: float = 600.0  # seconds without a message before a chat session ends
    max_chat_sessions: int = 1000  # open chat sessions, both directions together
    max_jingle_calls: int = 100  # Jingle audio calls bridged at once, both directions together
    jingle_ring_timeout: float = 60.0  # seconds a Jingle <-> SIP call may ring unanswered
    jingle_ice_addresses: tuple[str, ...] = ()  # ICE host candidates' addresses (): aioice's

    @property
    def enabled(self) -> bool:
        return self.component_jid is not None


@dataclass(frozen=True, slots=True)
class Config:
    sip: SipConfig = SipConfig()
    rtp: RtpConfig = RtpConfig()
    tls: TlsConfig = TlsConfig()
    server: ServerConfig = ServerConfig()
    applications: ApplicationsConfig = field(default_factory=ApplicationsConfig)
    echo: EchoConfig = EchoConfig()
    msrp: MsrpConfig = MsrpConfig()
    files: FilesConfig = FilesConfig()
    conference: ConferenceConfig = ConferenceConfig()
    cluster: ClusterConfig = ClusterConfig()
    audio: AudioConfig = AudioConfig()
    freeswitch: FreeSwitchConfig = FreeSwitchConfig()
    web: WebConfig = WebConfig()
    screen: ScreenConfig = ScreenConfig()
    api: ApiConfig = ApiConfig()
    xmpp: XmppConfig = XmppConfig()

    def node_sip_uri(self) -> str:
        """The SIP URI Kamailio reaches this node at: `[cluster] node_uri`, else the first
        UDP or TCP listen address (advertised address in place of a wildcard)."""
        if self.cluster.node_uri is not None:
            return self.cluster.node_uri
        plain = [a for a in self.sip.listen if a.transport in ("udp", "tcp")] or list(
            self.sip.listen
        )
        first = plain[0]
        host = self.sip.advertised_address or first.host
        host = f"[{host}]" if ":" in host else host
        suffix = "" if first.transport == "udp" else f";transport={first.transport}"
        return f"sip:{host}:{first.port}{suffix}"

    def pid_path(self) -> Path:
        return self.cluster.pid_file or self.server.spool_dir / "chorus.pid"
