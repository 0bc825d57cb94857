"""One node's wiring: the server, its applications (echo, conference, XMPP gateway), the web
server, the admin API and the cluster agent, built from the configuration; ``serve`` runs
them until SIGTERM/SIGINT (or, in cluster mode, the drain). ``chorus serve`` (control/cli.py)
imports this module only when it runs the node."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Callable

from control.apiaccess import URL_FILE, api_dir, load_token
from control.cluster import ClusterAgent, install_signal_handlers, signal_running_node
from control.conference import ChatLimits, ConferenceApp, ConferenceLimits, HistoryPolicy
from control.conference.files import ConferenceFiles
from control.conference.moderation import ModerationPolicy
from control.conference.refer import ReferPolicy
from control.conference.room import RoomObserver
from control.conference.screen import ScreenBoard
from control.conference.sharing import ConferenceScreens
from control.config import Config
from control.echo import EchoApp
from control.echo.app import EchoLimits
from control.files.rooms import FilesPolicy, RoomFiles
from control.files.spool import FileSpool
from control.media.engine import AudioEngine
from control.media.freeswitch import FreeSwitchEngine
from control.media.mixer import EmbeddedMixer
from control.media.srtp import SrtpPolicy
from control.metrics import MetricSources, NodeMetrics
from control.server import ApplicationMap, Server, tune_gc
from control.store import DATABASE_NAME, HistoryStore, Retention
from control.streams import FileStore
from control.web import build_web_server, screen_limits
from control.web.api import AdminApi
from control.web.dashboard_model import NodeDashboard
from control.xmpp.addressing import Addressing
from control.xmpp.app import GatewaySettings, XmppGateway
from control.xmpp.mucgw import MucGateway, MucSettings


def build_server(config: Config, *, room_observer: RoomObserver | None = None) -> Server:
    server = Server(config)
    server.register(
        "echo",
        EchoApp(
            server.ua,
            server.ports,
            codecs=config.rtp.codecs,
            limits=EchoLimits(
                session_limit=config.echo.session_limit,
                max_sessions=config.sip.max_sessions,
            ),
            srtp=SrtpPolicy(config.rtp.srtp),
            rtcp_interval=config.rtp.rtcp_interval,
            msrp=server.msrp,
            files=FileStore(
                FileSpool(config.server.spool_dir, max_file_bytes=config.files.max_file_bytes)
            ),
        ),
    )
    media_host = config.sip.advertised_address or config.sip.listen[0].host
    mixer: AudioEngine
    if config.audio.engine == "freeswitch":
        pool = config.freeswitch
        freeswitch = FreeSwitchEngine(
            server.ua,
            pool.nodes,
            answer_timeout=pool.answer_timeout,
            health_interval=pool.health_interval,
            failover_after=pool.failover_after,
            reconnect_max=pool.reconnect_max,
        )
        with contextlib.suppress(RuntimeError):  # no loop yet: the first call connects
            asyncio.get_running_loop().call_soon(freeswitch.start)
        mixer = freeswitch
    else:
        mixer = EmbeddedMixer(
            server.ports,
            host=media_host,
            codecs=config.rtp.codecs,
            rtp_timeout=config.rtp.timeout,
            srtp=config.rtp.srtp,
            rng=server.ua.rng,
            workers=config.rtp.mixer_workers,
            max_failing_ticks=config.rtp.failure_ticks,
            rtcp_interval=config.rtp.rtcp_interval,
            native=config.rtp.native_media,
            opus_complexity=config.rtp.opus_complexity,
        )
    # Rooms' files and screens (issue 9): one store and one screen board for the node, read
    # by the web server too (serve() builds it on the same objects).
    room_files = RoomFiles.open(
        config.server.spool_dir, policy=FilesPolicy.from_config(config.files)
    )
    server.register(
        "conference",
        ConferenceApp(
            server.ua,
            mixer,
            address=media_host,
            limits=ConferenceLimits(
                max_rooms=config.conference.max_rooms,
                max_participants=config.conference.max_participants,
                info_interval=config.conference.info_interval,
                info_max_subscriptions=config.conference.info_max_subscriptions,
            ),
            room_observer=room_observer,
            msrp=server.msrp,
            store=HistoryStore.open(
                config.server.spool_dir / DATABASE_NAME,
                retention=Retention(
                    keep=max(config.conference.history_messages, 1000),
                    max_age=config.conference.history_max_age,
                ),
                store_private=config.conference.store_private,
            ),
            chat=ChatLimits(
                rate=config.conference.chat_rate,
                burst=config.conference.chat_burst,
                max_message_bytes=config.conference.max_message_bytes,
                store_private=config.conference.store_private,
            ),
            history=HistoryPolicy(
                messages=config.conference.history_messages,
                max_age=config.conference.history_max_age,
            ),
            files=ConferenceFiles(
                room_files, server.msrp, retention_interval=config.files.retention_interval
            ),
            screens=ConferenceScreens(ScreenBoard(screen_limits(config))),
            moderation=ModerationPolicy.from_config(config.conference),
            refer=ReferPolicy.from_config(config),
        ),
    )
    if config.xmpp.enabled:  # the SIP<->XMPP gateway (control/xmpp): its XMPP domains route to it
        conference = server.applications["conference"]
        assert isinstance(conference, ConferenceApp)
        muc = muc_gateway(config, conference, media_host, server.ua.token)
        # REFER method=INVITE to an XMPP user: a MUC invitation (control/xmpp/mucinvite.py)
        conference.referrals.remote = muc.invitations if muc is not None else None
        gateway = XmppGateway(
            server.ua, gateway_settings(config), muc=muc, msrp=server.msrp, rtp_host=media_host
        )
        server.register("xmpp", gateway)
        mapping = {domain: "xmpp" for domain in config.xmpp.xmpp_domains}
        server.app_map = ApplicationMap(
            {**mapping, **config.applications.map}, config.applications.default
        )
    return server


def gateway_settings(config: Config) -> GatewaySettings:
    xmpp = config.xmpp
    assert xmpp.component_jid is not None and xmpp.component_secret is not None
    return GatewaySettings(
        component_jid=xmpp.component_jid,
        component_secret=xmpp.component_secret,
        server=xmpp.server,
        sip_domains=xmpp.sip_domains,
        xmpp_domains=xmpp.xmpp_domains,
        reconnect_max=xmpp.reconnect_max,
        max_message_bytes=xmpp.max_message_bytes,
        max_stanza_bytes=xmpp.max_stanza_bytes,
        send_timeout=xmpp.send_timeout,
        presence_expires=xmpp.presence_expires,
        presence_retry_max=xmpp.presence_retry_max,
        max_presence_subscriptions=xmpp.max_presence_subscriptions,
        chat_sessions=xmpp.chat_sessions,
        chat_session_idle=xmpp.chat_session_idle,
        max_chat_sessions=xmpp.max_chat_sessions,
        max_jingle_calls=xmpp.max_jingle_calls,
        jingle_ring_timeout=xmpp.jingle_ring_timeout,
        jingle_ice_addresses=xmpp.jingle_ice_addresses,
    )


def muc_gateway(
    config: Config, rooms: ConferenceApp, media_host: str, token: Callable[[int], str]
) -> MucGateway | None:
    """MUC <-> room chat (RFC 7702) when ``[xmpp] muc_domain`` is set: room@muc_domain is the
    conference room@conference_domain (default: the host the rooms' media is on)."""
    xmpp = config.xmpp
    if xmpp.muc_domain is None:
        return None
    assert xmpp.muc_secret is not None
    settings = MucSettings(
        muc_domain=xmpp.muc_domain,
        secret=xmpp.muc_secret,
        server=xmpp.server,
        conference_domain=xmpp.conference_domain or media_host.lower(),
        reconnect_max=xmpp.reconnect_max,
        max_message_bytes=xmpp.max_message_bytes,
        max_stanza_bytes=xmpp.max_stanza_bytes,
        invite_timeout=config.conference.refer_timeout,
    )
    addressing = Addressing(xmpp.sip_domains, xmpp.xmpp_domains)
    return MucGateway(rooms, addressing, settings, token=lambda: token(16))


async def serve(config: Config, ready: asyncio.Event | None = None) -> None:
    cluster = ClusterAgent.from_config(config) if config.cluster.enabled else None
    server = build_server(config, room_observer=cluster)
    await server.start()
    gateway = server.applications.get("xmpp")
    if isinstance(gateway, XmppGateway):
        gateway.start()  # connects in the background, reconnecting with back-off
    # [web]: screen viewer, room pages, downloads, over the conference's rooms, screen board
    # and room files; the URLs the rooms announce are the web server's.
    conference = server.applications["conference"]
    assert isinstance(conference, ConferenceApp)
    web = None
    if conference.screens is not None and conference.files is not None:
        sources = MetricSources(
            server.ua,
            server.msrp,
            conference=conference,
            cluster=cluster,
            xmpp=gateway if isinstance(gateway, XmppGateway) else None,
        )
        operator = load_token(config)  # the admin API's: the dashboard's and /metrics'
        pid_file = config.pid_path()
        web = build_web_server(
            config,
            conference.screens.board,
            rooms=conference,
            files=conference.files.files,
            metrics=NodeMetrics(sources),
            metrics_token=None if config.web.metrics_public else operator,
            # The drain button does what `chorus drain [--undo]` does: signal this node.
            dashboard=NodeDashboard(
                sources,
                drain=(lambda undo: signal_running_node(pid_file, undo=undo)) if cluster else None,
            ),
            operator_token=operator,
        )
    if web is not None:
        conference.publish(web.urls)
        await web.start()
    api = None
    if config.api.enabled:  # the admin API (control/web/api.py), loopback only
        files = conference.files.files if conference.files is not None else None
        api = AdminApi(conference, load_token(config), files=files)
        listen = config.api.listen
        await api.start(listen.host, listen.port, api_dir(config) / URL_FILE)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    if cluster is None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
    else:
        await cluster.start()
        install_signal_handlers(
            cluster,
            stop,
            drain_timeout=config.cluster.drain_timeout,
            drain_exit=config.cluster.drain_exit,
        )
        config.pid_path().parent.mkdir(parents=True, exist_ok=True)
        config.pid_path().write_text(f"{os.getpid()}\n")
    tune_gc(config.server.gc_threshold)
    logging.getLogger("chorus").info("chorus ready")
    print("chorus ready", flush=True)
    if ready is not None:
        ready.set()
    await stop.wait()
    logging.getLogger("chorus").info("shutting down")
    if api is not None:
        await api.stop()
    if web is not None:  # first: downloads and viewers read the rooms' files and screens
        await web.stop()
    await server.stop()
    if cluster is not None:
        await cluster.stop(timeout=2 * config.cluster.rpc_timeout + 1)
        config.pid_path().unlink(missing_ok=True)
