"""Configuration: one TOML file, validated at start-up with errors that name the key.

Every key has a default that serves on 127.0.0.1, so `chorus serve` with no file works. The
README's configuration table documents each key; keep the two in step. The settings
themselves (what components read) are control/settings.py; this module parses into them and
re-exports them, so ``from control.config import Config`` keeps working.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import tomllib
from pathlib import Path
from typing import Any

from control.configtable import Section as _Section
from control.configtable import host_port as _host_port
from control.logs import LOG_FORMATS
from control.media import native as native_media
from control.settings import (
    AUDIO_ENGINES,
    TRANSPORTS,
    WEB_SCHEMES,
    ApiConfig,
    ApplicationsConfig,
    AudioConfig,
    ClusterConfig,
    ConferenceConfig,
    Config,
    ConfigError,
    EchoConfig,
    FilesConfig,
    FreeSwitchConfig,
    FreeSwitchNode,
    ListenAddress,
    MsrpConfig,
    RoomConfig,
    RtpConfig,
    ScreenConfig,
    ServerConfig,
    SipConfig,
    TlsConfig,
    WebConfig,
    XmppConfig,
)
from control.sip.transaction import Timers
from control.xmpp.config import parse_xmpp

__all__ = [
    "AUDIO_ENGINES",
    "ApiConfig",
    "ApplicationsConfig",
    "AudioConfig",
    "ClusterConfig",
    "ConferenceConfig",
    "Config",
    "ConfigError",
    "EchoConfig",
    "FilesConfig",
    "FreeSwitchConfig",
    "FreeSwitchNode",
    "ListenAddress",
    "MsrpConfig",
    "RoomConfig",
    "RtpConfig",
    "ScreenConfig",
    "ServerConfig",
    "SipConfig",
    "TRANSPORTS",
    "TlsConfig",
    "WEB_SCHEMES",
    "WebConfig",
    "XmppConfig",
    "load_config",
    "parse_config",
    "parse_listen",
]


def parse_listen(key: str, text: str, transports: tuple[str, ...] = TRANSPORTS) -> ListenAddress:
    transport, sep, rest = text.partition(":")
    if not sep or transport not in transports:
        raise ConfigError(key, f"{text!r}: expected one of {'/'.join(transports)}:HOST:PORT")
    host, sep, port_text = rest.rpartition(":")
    if not sep or not port_text.isdigit():
        raise ConfigError(key, f"{text!r}: expected {transport}:HOST:PORT")
    host = host.strip("[]")
    try:
        ipaddress.ip_address(host)
    except ValueError as exc:
        raise ConfigError(key, f"{host!r} is not an IP address") from exc
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise ConfigError(key, f"port {port} out of range")
    return ListenAddress(transport, host, port)


KNOWN_CODECS = ("PCMU", "PCMA", "G722", "speex", "opus", "telephone-event")
APPLICATIONS = ("conference", "echo", "xmpp")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
EVENT_LOOPS = ("asyncio", "uvloop")
REFER_POLICIES = ("moderators", "participants")  # control/conference/refer.py


def load_config(path: Path | None) -> Config:
    """Read and validate ``path``; None gives the defaults."""
    if path is None:
        return Config()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError("config", f"cannot read {path}: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("config", f"{path} is not valid TOML: {exc}") from exc
    return parse_config(data)


def parse_config(data: dict[str, Any]) -> Config:
    root = _Section("", data)
    config = Config(
        sip=_parse_sip(_Section("sip", root.take("sip", dict, {}))),
        rtp=_parse_rtp(_Section("rtp", root.take("rtp", dict, {}))),
        tls=_parse_tls(_Section("tls", root.take("tls", dict, {}))),
        server=_parse_server(_Section("server", root.take("server", dict, {}))),
        applications=_parse_applications(
            _Section("applications", root.take("applications", dict, {}))
        ),
        echo=_parse_echo(_Section("echo", root.take("echo", dict, {}))),
        msrp=_parse_msrp(_Section("msrp", root.take("msrp", dict, {}))),
        files=_parse_files(_Section("files", root.take("files", dict, {}))),
        conference=_parse_conference(_Section("conference", root.take("conference", dict, {}))),
        cluster=_parse_cluster(_Section("cluster", root.take("cluster", dict, {}))),
        audio=_parse_audio(_Section("audio", root.take("audio", dict, {}))),
        freeswitch=_parse_freeswitch(_Section("freeswitch", root.take("freeswitch", dict, {}))),
        web=_parse_web(_Section("web", root.take("web", dict, {}))),
        screen=_parse_screen(_Section("screen", root.take("screen", dict, {}))),
        api=_parse_api(_Section("api", root.take("api", dict, {}))),
        xmpp=parse_xmpp(_Section("xmpp", root.take("xmpp", dict, {}))),
    )
    if config.audio.engine == "freeswitch" and not config.freeswitch.nodes:
        raise ConfigError("freeswitch.nodes", 'needs at least one node with engine = "freeswitch"')
    if root.data:
        raise ConfigError(sorted(root.data)[0], "unknown section")
    return config


def _parse_sip(section: _Section) -> SipConfig:
    default = SipConfig()
    listen_texts = section.strings("listen", tuple(str(a) for a in default.listen))
    if not listen_texts:
        raise ConfigError(section.key("listen"), "needs at least one address")
    listen = tuple(parse_listen(f"sip.listen[{i}]", text) for i, text in enumerate(listen_texts))
    advertised = section.take("advertised_address", str, None)
    if advertised is not None:
        try:
            ipaddress.ip_address(advertised)
        except ValueError as exc:
            raise ConfigError(section.key("advertised_address"), "not an IP address") from exc
    proxy = section.take("outbound_proxy", str, None)
    if proxy is not None and not proxy.startswith(("sip:", "sips:")):
        raise ConfigError(section.key("outbound_proxy"), "expected a sip: URI")
    peers = []
    for index, text in enumerate(
        section.strings("trusted_peers", tuple(str(n) for n in default.trusted_peers))
    ):
        try:
            peers.append(ipaddress.ip_network(text, strict=False))
        except ValueError as exc:
            raise ConfigError(f"sip.trusted_peers[{index}]", f"{text!r} is not a network") from exc
    t1 = section.number("t1", default.timers.t1, minimum=0.01)
    t2 = section.number("t2", default.timers.t2, minimum=t1)
    t4 = section.number("t4", default.timers.t4, minimum=0.01)
    min_se = section.integer("min_se", default.min_se, minimum=1)
    min_expires = section.integer(
        "subscription_min_expires", default.subscription_min_expires, minimum=1
    )
    config = SipConfig(
        listen=listen,
        advertised_address=advertised,
        outbound_proxy=proxy,
        trusted_peers=tuple(peers),
        timers=Timers(t1=t1, t2=t2, t4=t4),
        max_message_bytes=section.integer(
            "max_message_bytes", default.max_message_bytes, minimum=1500
        ),
        max_connections=section.integer("max_connections", default.max_connections, minimum=1),
        connection_idle_timeout=section.number(
            "connection_idle_timeout", default.connection_idle_timeout, minimum=1.0
        ),
        max_sessions=section.integer("max_sessions", default.max_sessions, minimum=1),
        session_expires=section.integer("session_expires", default.session_expires, minimum=min_se),
        min_se=min_se,
        subscription_max_expires=section.integer(
            "subscription_max_expires", default.subscription_max_expires, minimum=min_expires
        ),
        subscription_min_expires=min_expires,
        max_subscriptions_per_source=section.integer(
            "max_subscriptions_per_source", default.max_subscriptions_per_source, minimum=1
        ),
        overload_lag_ms=section.integer("overload_lag_ms", default.overload_lag_ms, minimum=0),
        overload_retry_after=section.integer(
            "overload_retry_after", default.overload_retry_after, minimum=0
        ),
    )
    section.finish()
    return config


def _parse_rtp(section: _Section) -> RtpConfig:
    default = RtpConfig()
    text = section.take("port_range", str, f"{default.port_range[0]}-{default.port_range[1]}")
    low, sep, high = text.partition("-")
    if not sep or not low.isdigit() or not high.isdigit():
        raise ConfigError(section.key("port_range"), f"{text!r}: expected LOW-HIGH")
    port_range = (int(low), int(high))
    if not 1024 <= port_range[0] < port_range[1] <= 65535 or port_range[1] - port_range[0] < 1:
        raise ConfigError(section.key("port_range"), f"{text!r}: expected 1024 <= LOW < HIGH")
    codecs = section.strings("codecs", default.codecs)
    for index, codec in enumerate(codecs):
        if codec not in KNOWN_CODECS:
            raise ConfigError(f"rtp.codecs[{index}]", f"unknown codec {codec!r}")
    srtp = section.take("srtp", str, default.srtp)
    if srtp not in ("optional", "mandatory", "disabled"):
        raise ConfigError(section.key("srtp"), "expected optional, mandatory or disabled")
    config = RtpConfig(
        port_range=port_range,
        timeout=section.number("timeout", default.timeout, minimum=1.0),
        codecs=codecs,
        srtp=srtp,
        mixer_workers=section.integer("mixer_workers", default.mixer_workers, minimum=0),
        failure_ticks=section.integer("failure_ticks", default.failure_ticks, minimum=1),
        rtcp_interval=section.number("rtcp_interval", default.rtcp_interval, minimum=0.1),
        native_media=bool(section.take("native_media", bool, default.native_media)),
        opus_complexity=section.integer("opus_complexity", default.opus_complexity, minimum=0),
    )
    if config.opus_complexity > 10:
        raise ConfigError(section.key("opus_complexity"), "must be 0-10 (libopus complexity)")
    if native_media.choose(config.native_media) and not native_media.available():
        # Never a silent fall-back: the operator asked for (or defaulted to) the C loop.
        raise ConfigError(
            section.key("native_media"),
            "the C media loop (control/media/native/_media) is not built: run make deps "
            "(pip install -e ., needs gcc and python3-dev), or set native_media = false "
            f"(or {native_media.ENV}=0) for the Python path",
        )
    section.finish()
    return config


def _parse_tls(section: _Section) -> TlsConfig:
    certificate = section.take("certificate", str, None)
    private_key = section.take("private_key", str, None)
    if (certificate is None) != (private_key is None):
        raise ConfigError(section.key("certificate"), "certificate and private_key go together")
    config = TlsConfig(
        certificate=Path(certificate) if certificate else None,
        private_key=Path(private_key) if private_key else None,
    )
    for key, path in (("certificate", config.certificate), ("private_key", config.private_key)):
        if path is not None and not path.is_file():
            raise ConfigError(section.key(key), f"{path} does not exist")
    section.finish()
    return config


def _parse_server(section: _Section) -> ServerConfig:
    default = ServerConfig()
    level = section.take("log_level", str, default.log_level).upper()
    if level not in LOG_LEVELS:
        raise ConfigError(section.key("log_level"), f"expected one of {', '.join(LOG_LEVELS)}")
    log_format = section.take("log_format", str, default.log_format)
    if log_format not in LOG_FORMATS:
        raise ConfigError(section.key("log_format"), f"expected one of {', '.join(LOG_FORMATS)}")
    trace = section.take("trace_sip", (str, bool), False)
    if trace is True:
        raise ConfigError(section.key("trace_sip"), "expected a file path or false")
    trace_msrp = section.take("trace_msrp", (str, bool), False)
    if trace_msrp is True:
        raise ConfigError(section.key("trace_msrp"), "expected a file path or false")
    config = ServerConfig(
        spool_dir=Path(section.take("spool_dir", str, str(default.spool_dir))),
        log_level=level,
        log_format=log_format,
        trace_sip=Path(trace) if trace else None,
        trace_msrp=Path(trace_msrp) if trace_msrp else None,
        shutdown_timeout=section.number("shutdown_timeout", default.shutdown_timeout, minimum=0.1),
        event_loop=_event_loop(section, default.event_loop),
        gc_threshold=section.integer("gc_threshold", default.gc_threshold, minimum=100),
    )
    section.finish()
    return config


def _event_loop(section: _Section, default: str) -> str:
    """``asyncio`` or ``uvloop``; uvloop must be importable, or the server would not start."""
    name = section.take("event_loop", str, default)
    if name not in EVENT_LOOPS:
        raise ConfigError(section.key("event_loop"), f"expected one of {', '.join(EVENT_LOOPS)}")
    if name == "uvloop" and importlib.util.find_spec("uvloop") is None:
        raise ConfigError(section.key("event_loop"), "uvloop is not installed")
    return name


def _parse_applications(section: _Section) -> ApplicationsConfig:
    default = section.take("default", str, "conference")
    if default not in APPLICATIONS:
        raise ConfigError(section.key("default"), f"unknown application {default!r}")
    mapping = section.take("map", dict, {"echo": "echo"})
    for key, value in mapping.items():
        if not isinstance(value, str) or value not in APPLICATIONS:
            raise ConfigError(f"applications.map.{key}", f"unknown application {value!r}")
    section.finish()
    return ApplicationsConfig(default=default, map=dict(mapping))


def _parse_conference(section: _Section) -> ConferenceConfig:
    default = ConferenceConfig()
    config = ConferenceConfig(
        max_rooms=section.integer("max_rooms", default.max_rooms, minimum=1),
        max_participants=section.integer("max_participants", default.max_participants, minimum=2),
        history_messages=section.integer("history_messages", default.history_messages),
        history_max_age=section.number("history_max_age", default.history_max_age, minimum=1.0),
        chat_rate=section.number("chat_rate", default.chat_rate, minimum=0.01),
        chat_burst=section.integer("chat_burst", default.chat_burst, minimum=1),
        store_private=bool(section.take("store_private", bool, default.store_private)),
        max_message_bytes=section.integer(
            "max_message_bytes", default.max_message_bytes, minimum=1024
        ),
        moderators=section.strings("moderators", default.moderators),
        creator_moderates=bool(section.take("creator_moderates", bool, default.creator_moderates)),
        pin_attempts=section.integer("pin_attempts", default.pin_attempts, minimum=1),
        info_interval=section.number("info_interval", default.info_interval, minimum=0.0),
        info_max_subscriptions=section.integer(
            "info_max_subscriptions", default.info_max_subscriptions, minimum=1
        ),
        rooms=_parse_rooms(section, section.take("rooms", dict, {})),
        refer_policy=_choice(section, "refer_policy", REFER_POLICIES, default.refer_policy),
        refer_allow=section.strings("refer_allow", default.refer_allow),
        refer_timeout=section.number("refer_timeout", default.refer_timeout, minimum=1.0),
        refer_max_pending=section.integer(
            "refer_max_pending", default.refer_max_pending, minimum=1
        ),
    )
    section.finish()
    return config


def _choice(section: _Section, key: str, choices: tuple[str, ...], default: str) -> str:
    value = section.take(key, str, default)
    if value not in choices:
        raise ConfigError(section.key(key), f"expected one of {', '.join(choices)}")
    return value


PIN_CHARS = "0123456789*ABCD"


def _parse_rooms(parent: _Section, tables: dict[str, Any]) -> dict[str, RoomConfig]:
    rooms = {}
    for name, table in tables.items():
        section = _Section(parent.key(f"rooms.{name}"), table)
        pin = section.take("pin", str, None)
        if pin is not None:
            pin = pin.strip().upper()
            if not 1 <= len(pin) <= 32 or any(c not in PIN_CHARS for c in pin):
                raise ConfigError(section.key("pin"), "a PIN is 1 to 32 of 0-9, *, A-D")
        rooms[name.lower()] = RoomConfig(
            pin=pin,
            locked=bool(section.take("locked", bool, False)),
            private_messages=bool(section.take("private_messages", bool, True)),
            moderators=section.strings("moderators", ()),
        )
        section.finish()
    return rooms


def _parse_api(section: _Section) -> ApiConfig:
    default = ApiConfig()
    text = section.take("listen", str, "")
    listen = parse_listen(section.key("listen"), text, ("http",)) if text else default.listen
    if not ipaddress.ip_address(listen.host).is_loopback:
        raise ConfigError(section.key("listen"), "plain http only on a loopback address")
    token = section.take("token", str, None)
    if token is not None and len(token) < 16:
        raise ConfigError(section.key("token"), "must be at least 16 characters")
    config = ApiConfig(
        enabled=bool(section.take("enabled", bool, default.enabled)),
        listen=listen,
        token=token,
    )
    section.finish()
    return config


def _parse_echo(section: _Section) -> EchoConfig:
    config = EchoConfig(session_limit=section.number("session_limit", 600.0, minimum=1.0))
    section.finish()
    return config


def _parse_msrp(section: _Section) -> MsrpConfig:
    default = MsrpConfig()
    texts = section.strings("listen", tuple(str(a) for a in default.listen))
    listen = tuple(
        parse_listen(f"msrp.listen[{i}]", text, ("tls", "tcp")) for i, text in enumerate(texts)
    )
    kinds = [a.transport for a in listen]
    for index, kind in enumerate(kinds):
        if kind in kinds[:index]:
            raise ConfigError(f"msrp.listen[{index}]", f"one {kind} address only")
    config = MsrpConfig(
        listen=listen,
        max_message_bytes=section.integer(
            "max_message_bytes", default.max_message_bytes, minimum=1024
        ),
        max_chunk_bytes=section.integer("max_chunk_bytes", default.max_chunk_bytes, minimum=1024),
        connect_timeout=section.number("connect_timeout", default.connect_timeout, minimum=0.1),
        idle_timeout=section.number("idle_timeout", default.idle_timeout, minimum=1.0),
    )
    section.finish()
    return config


def _parse_files(section: _Section) -> FilesConfig:
    default = FilesConfig()
    after = section.take("after_room_ends", str, default.after_room_ends)
    if after not in ("keep", "delete"):
        raise ConfigError(section.key("after_room_ends"), "expected one of keep, delete")
    config = FilesConfig(
        max_file_bytes=section.integer("max_file_bytes", default.max_file_bytes, minimum=1),
        room_quota_bytes=section.integer("room_quota_bytes", default.room_quota_bytes),
        retain_max_age=section.number("retain_max_age", default.retain_max_age),
        retain_room_bytes=section.integer("retain_room_bytes", default.retain_room_bytes),
        push_to_participants=bool(
            section.take("push_to_participants", bool, default.push_to_participants)
        ),
        push_concurrency=section.integer("push_concurrency", default.push_concurrency, minimum=1),
        push_timeout=section.number("push_timeout", default.push_timeout, minimum=1.0),
        after_room_ends=after,
        retention_interval=section.number(
            "retention_interval", default.retention_interval, minimum=1.0
        ),
    )
    section.finish()
    return config


def _parse_cluster(section: _Section) -> ClusterConfig:
    default = ClusterConfig()
    rpc = section.take("kamailio_rpc", str, None)
    if rpc is not None and not rpc.startswith(("http://", "https://")):
        raise ConfigError(section.key("kamailio_rpc"), "expected an http:// URL (jsonrpcs)")
    node_uri = section.take("node_uri", str, None)
    if node_uri is not None and not node_uri.startswith(("sip:", "sips:")):
        raise ConfigError(section.key("node_uri"), "expected a sip: URI")
    pid_file = section.take("pid_file", str, None)
    config = ClusterConfig(
        kamailio_rpc=rpc,
        node_uri=node_uri,
        dispatcher_set=section.integer("dispatcher_set", default.dispatcher_set, minimum=0),
        htable=section.take("htable", str, default.htable),
        pin_expiry=section.number("pin_expiry", default.pin_expiry, minimum=3.0),
        rpc_timeout=section.number("rpc_timeout", default.rpc_timeout, minimum=0.1),
        drain_timeout=section.number("drain_timeout", default.drain_timeout, minimum=0.0),
        drain_exit=section.take("drain_exit", bool, default.drain_exit),
        pid_file=Path(pid_file) if pid_file else None,
    )
    if not config.htable:
        raise ConfigError(section.key("htable"), "must not be empty")
    section.finish()
    return config


def _parse_audio(section: _Section) -> AudioConfig:
    engine = section.take("engine", str, AudioConfig().engine)
    if engine not in AUDIO_ENGINES:
        raise ConfigError(section.key("engine"), f"expected one of {', '.join(AUDIO_ENGINES)}")
    section.finish()
    return AudioConfig(engine=engine)


def _parse_freeswitch(section: _Section) -> FreeSwitchConfig:
    default = FreeSwitchConfig()
    nodes = []
    for index, item in enumerate(section.take("nodes", list, [])):
        node = _Section(f"freeswitch.nodes[{index}]", item)
        sip = _host_port(node.key("sip"), node.take("sip", str, None))
        esl = _host_port(node.key("esl"), node.take("esl", str, None))
        password = node.take("password", str, None)
        if not password:
            raise ConfigError(node.key("password"), "required (the node's event_socket password)")
        node.finish()
        nodes.append(FreeSwitchNode(sip[0], sip[1], esl[0], esl[1], password))
    if len({n.name for n in nodes}) != len(nodes):
        raise ConfigError(section.key("nodes"), "two nodes share one SIP address")
    config = FreeSwitchConfig(
        nodes=tuple(nodes),
        answer_timeout=section.number("answer_timeout", default.answer_timeout, minimum=0.5),
        health_interval=section.number("health_interval", default.health_interval, minimum=0.1),
        failover_after=section.number("failover_after", default.failover_after, minimum=0.0),
        reconnect_max=section.number("reconnect_max", default.reconnect_max, minimum=0.5),
    )
    section.finish()
    return config


def _parse_web(section: _Section) -> WebConfig:
    default = WebConfig()
    text = section.take("listen", str, "")
    listen = parse_listen(section.key("listen"), text, WEB_SCHEMES) if text else None
    loopback = listen is not None and ipaddress.ip_address(listen.host).is_loopback
    if listen is not None and listen.transport == "http" and not loopback:
        raise ConfigError(section.key("listen"), "plain http only on a loopback address")
    public_url = section.take("public_url", str, None)
    if public_url is not None and not public_url.startswith(("http://", "https://")):
        raise ConfigError(section.key("public_url"), "expected an http:// or https:// URL")
    secret = section.take("token_secret", str, None)
    if secret is not None and len(secret) < 16:
        raise ConfigError(section.key("token_secret"), "must be at least 16 characters")
    config = WebConfig(
        listen=listen,
        public_url=public_url.rstrip("/") if public_url else None,
        token_secret=secret,
        token_ttl=section.number("token_ttl", default.token_ttl, minimum=1.0),
        metrics_public=section.take("metrics_public", bool, default.metrics_public),
    )
    section.finish()
    return config


def _parse_screen(section: _Section) -> ScreenConfig:
    default = ScreenConfig()
    config = ScreenConfig(
        idle_timeout=section.number("idle_timeout", default.idle_timeout, minimum=0.1),
        max_frame_bytes=section.integer("max_frame_bytes", default.max_frame_bytes, minimum=1024),
        max_width=section.integer("max_width", default.max_width, minimum=16),
        max_height=section.integer("max_height", default.max_height, minimum=16),
    )
    section.finish()
    return config
