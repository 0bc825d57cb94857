"""The node's Prometheus metrics (``GET /metrics`` on the web server, control/web/server.py).

One `CollectorRegistry` per `NodeMetrics`, never prometheus-client's global default: two
servers in one process (tests do this) each report their own figures. Almost everything is
read from the live model at scrape time by one custom collector, rather than kept in
counters sprinkled through the code:

* gauges of what exists now: rooms, participants by media, conference-info watchers, SIP
  dialogs and subscriptions, MSRP connections, stored files, per-stream RTP quality from
  RTCP (RFC 3550 §6.4), FreeSWITCH nodes, the Kamailio RPC link, the XMPP component;
* counters of events, which their owners already count as plain integers (the UA's
  `SipCounters`, the MSRP transport's `MsrpCounters`, the mixer's `MixCounters`) and which
  are only exposed here.

The audio engine answers `stats()` and `quality()` asynchronously (its worker processes are
asked), so `NodeMetrics.render` gathers those first and the collector reads that snapshot.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector, CollectorRegistry

from control import package_version
from control.cluster import ClusterAgent, NodePhase
from control.conference.app import ConferenceApp
from control.files.records import FileStatus
from control.media.engine import AudioEngine, ParticipantId, RoomId
from control.media.freeswitch import FreeSwitchEngine
from control.media.mixer import EmbeddedMixer
from control.media.mixroom import MixCounters
from control.media.rtcpsession import StreamQuality
from control.msrp.transport import MsrpTransport
from control.sip.useragent import UserAgent
from control.streams.base import MediaKind
from control.xmpp.app import XmppGateway

__all__ = ["MetricSources", "NodeMetrics"]

log = logging.getLogger("chorus.metrics")

STATUS_CLASSES = (2, 3, 4, 5, 6)  # final responses only: a 1xx is not an outcome


@dataclass(frozen=True, slots=True)
class MetricSources:
    """What the node is made of, as far as metrics read it (cli.serve fills it in)."""

    ua: UserAgent
    msrp: MsrpTransport
    conference: ConferenceApp | None = None
    cluster: ClusterAgent | None = None
    xmpp: XmppGateway | None = None
    audio: AudioEngine | None = None  # None: the conference's engine

    @property
    def engine(self) -> AudioEngine | None:
        if self.audio is not None:
            return self.audio
        return self.conference.engine if self.conference is not None else None


@dataclass(slots=True)
class _Snapshot:
    """The asynchronous reads of one scrape."""

    mix: MixCounters | None = None
    quality: dict[tuple[RoomId, ParticipantId], StreamQuality] = field(default_factory=dict)
    files: int | None = None
    file_bytes: int | None = None


class NodeMetrics:
    """The node's registry and its collector; `render` answers one scrape."""

    def __init__(self, sources: MetricSources) -> None:
        self.sources = sources
        self.registry = CollectorRegistry(auto_describe=False)
        self._collector = _NodeCollector(sources)
        self.registry.register(self._collector)

    async def refresh(self) -> None:
        """Gather what the collector cannot read synchronously: the engine's counters and
        per-stream quality, the stored files (a database read, off the event loop)."""
        snapshot = _Snapshot()
        engine = self.sources.engine
        if engine is not None:
            try:
                snapshot.quality = await engine.quality()
                if isinstance(engine, EmbeddedMixer):
                    snapshot.mix = await engine.stats()
            except Exception:  # noqa: BLE001 - a scrape must answer; the figures are omitted
                log.exception("metrics: reading the audio engine failed")
        conference = self.sources.conference
        if conference is not None and conference.files is not None:
            records = conference.files.files.records
            rows = await asyncio.to_thread(records.all)
            stored = [row for row in rows if row.status is FileStatus.STORED]
            snapshot.files = len(stored)
            snapshot.file_bytes = sum(row.size for row in stored)
        self._collector.snapshot = snapshot

    async def render(self, accept: str | None = None) -> tuple[bytes, str]:
        """The exposition (body, content type) for a request's ``Accept`` header: the
        Prometheus text format, or OpenMetrics when the scraper asks for it."""
        await self.refresh()
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


class _NodeCollector(Collector):
    def __init__(self, sources: MetricSources) -> None:
        self.sources = sources
        self.snapshot = _Snapshot()

    def collect(self) -> Iterable[Metric]:
        info = InfoMetricFamily("chorus", "The Chorus node")
        info.add_metric([], {"version": package_version()})
        yield info
        yield from self._sip()
        yield from self._msrp()
        if self.sources.conference is not None:
            yield from self._conference(self.sources.conference)
        yield from self._media()
        if self.sources.cluster is not None:
            yield from self._cluster(self.sources.cluster)
        if self.sources.xmpp is not None:
            connected = self.sources.xmpp.component.connected
            yield _gauge(
                "chorus_xmpp_component_connected",
                "1 while the XEP-0114 component is connected to the XMPP server",
                1 if connected else 0,
            )

    def _sip(self) -> Iterator[Metric]:
        ua = self.sources.ua
        counters = ua.counters
        yield _by_method(
            "chorus_sip_requests_received",
            "SIP requests that opened a server transaction (retransmissions excluded)",
            counters.requests_received,
        )
        yield _by_method(
            "chorus_sip_requests_sent",
            "SIP requests we sent in a new client transaction (NOTIFYs among them)",
            counters.requests_sent,
        )
        finals = CounterMetricFamily(
            "chorus_sip_responses_sent",
            "Final responses we sent, by request method and status class",
            labels=["method", "class"],
        )
        for (method, klass), count in sorted(counters.final_responses.items()):
            finals.add_metric([method, f"{klass}xx"], count)
        yield finals
        calls = CounterMetricFamily(
            "chorus_calls",
            "Incoming calls (initial INVITEs) by the class of their final response",
            labels=["outcome"],
        )
        for klass in STATUS_CLASSES:
            calls.add_metric([f"{klass}xx"], counters.calls.get(klass, 0))
        yield calls
        yield _gauge("chorus_sip_dialogs", "INVITE sessions (dialogs) open", len(ua.dialogs))
        yield _gauge(
            "chorus_sip_subscriptions",
            "Subscription usages in dialogs, every event package, both directions",
            sum(len(usages) for usages in ua.event_usages.values()),
        )
        yield _gauge(
            "chorus_sip_transactions",
            "SIP transactions alive (Timer J/K included)",
            ua.transaction_count,
        )
        guard = ua.overload  # [sip] overload_lag_ms; None: off, nothing is ever shed
        yield _by_method(
            "chorus_sip_overload_shed",
            "New out-of-dialog requests refused 503 while the event loop was behind",
            guard.shed if guard is not None else {},
        )
        yield _gauge(
            "chorus_sip_overloaded",
            "1 while new requests are refused because the event loop is behind",
            1 if guard is not None and guard.overloaded else 0,
        )
        if guard is not None:
            yield _counter(
                "chorus_sip_overload_entered", "Times the node went into overload", guard.entered
            )
            yield _gauge(
                "chorus_event_loop_lag_seconds",
                "How late the loop's periodic probe runs, averaged over about a second",
                guard.lag,
            )

    def _msrp(self) -> Iterator[Metric]:
        msrp = self.sources.msrp
        counters = msrp.counters
        yield _counter(
            "chorus_msrp_messages_received",
            "Complete MSRP messages received (binding SENDs excluded)",
            counters.messages_received,
        )
        yield _counter(
            "chorus_msrp_messages_sent", "Complete MSRP messages sent", counters.messages_sent
        )
        yield _counter(
            "chorus_msrp_received_bytes",
            "MSRP bytes read, every connection",
            counters.bytes_received,
        )
        yield _counter(
            "chorus_msrp_sent_bytes", "MSRP bytes written, every connection", counters.bytes_sent
        )
        yield _gauge("chorus_msrp_connections", "MSRP connections open", msrp.connection_count)

    def _conference(self, conference: ConferenceApp) -> Iterator[Metric]:
        rooms = list(conference.rooms.values())
        yield _gauge("chorus_rooms", "Conference rooms live on this node", len(rooms))
        people = [
            p for room in rooms for p in list(room.participants.values()) if not p.transfer_only
        ]
        yield _gauge("chorus_participants", "Participants in the rooms", len(people))
        by_media = GaugeMetricFamily(
            "chorus_participants_by_media",
            "Participants with a stream of this kind (one may count under several)",
            labels=["media"],
        )
        for kind in MediaKind:
            by_media.add_metric([kind.value], sum(1 for p in people if kind in p.kinds))
        yield by_media
        yield _gauge(
            "chorus_file_transfers",
            "Sessions in rooms that carry file transfers only",
            sum(1 for room in rooms for p in list(room.participants.values()) if p.transfer_only),
        )
        yield _gauge(
            "chorus_conference_subscriptions",
            "Conference-info (RFC 4575) subscriptions to live rooms",
            sum(conference.subscription_count(room) for room in rooms),
        )
        snapshot = self.snapshot
        if snapshot.files is not None and snapshot.file_bytes is not None:
            yield _gauge("chorus_files_stored", "Room files stored in the spool", snapshot.files)
            yield _gauge(
                "chorus_files_stored_bytes", "Bytes of the stored room files", snapshot.file_bytes
            )

    def _media(self) -> Iterator[Metric]:
        engine = self.sources.engine
        snapshot = self.snapshot
        mix = snapshot.mix
        if mix is not None:
            yield from _mixer(mix, len(snapshot.quality))
        if snapshot.quality or engine is not None:
            yield from _quality(snapshot.quality)
        if isinstance(engine, FreeSwitchEngine):
            states = engine.node_states()
            up = GaugeMetricFamily(
                "chorus_freeswitch_node_up",
                "1 while the node's Event Socket is connected and answers health probes",
                labels=["node"],
            )
            connected = GaugeMetricFamily(
                "chorus_freeswitch_node_connected",
                "1 while the node's Event Socket is connected and authenticated",
                labels=["node"],
            )
            rooms = GaugeMetricFamily(
                "chorus_freeswitch_node_rooms", "Rooms mixed on the node", labels=["node"]
            )
            for name, state in sorted(states.items()):
                up.add_metric([name], 1 if state.fit else 0)
                connected.add_metric([name], 1 if state.connected else 0)
                rooms.add_metric([name], len(state.rooms))
            yield from (up, connected, rooms)

    def _cluster(self, cluster: ClusterAgent) -> Iterator[Metric]:
        core = cluster.core
        yield _gauge(
            "chorus_kamailio_rpc_up",
            "0 while JSON-RPC calls to the Kamailio edge fail (retried with back-off)",
            0 if core.failing else 1,
        )
        yield _gauge(
            "chorus_cluster_registered",
            "1 while this node is a destination in the edge's dispatcher set",
            1 if core.registered else 0,
        )
        phase = GaugeMetricFamily(
            "chorus_cluster_phase", "The node's phase (1 for the current one)", labels=["phase"]
        )
        for value in NodePhase:
            phase.add_metric([value.value], 1 if cluster.phase is value else 0)
        yield phase


def _by_method(name: str, doc: str, counts: Mapping[str, int]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=["method"])
    for method, count in sorted(counts.items()):
        family.add_metric([method], count)
    return family


def _mixer(mix: MixCounters, participants: int) -> Iterator[Metric]:
    yield _gauge(
        "chorus_mixer_participants", "Participants whose audio the mixer mixes", participants
    )
    yield _counter("chorus_mixer_ticks", "20 ms mixer ticks run", mix.ticks)
    yield _counter(
        "chorus_mixer_ticks_late", "Ticks that ran later than the lateness bound", mix.late_ticks
    )
    yield _counter(
        "chorus_mixer_ticks_dropped", "Ticks skipped to catch up after a stall", mix.dropped_ticks
    )
    yield _counter("chorus_mixer_frames_mixed", "Listener frames sent", mix.frames_mixed)
    yield _counter(
        "chorus_mixer_frames_dropped", "Listener frames lost to skipped ticks", mix.frames_dropped
    )
    yield _counter("chorus_mixer_rtp_received", "RTP packets taken in", mix.packets_in)
    errors = CounterMetricFamily(
        "chorus_mixer_errors", "Mixing faults, contained where they happened", labels=["kind"]
    )
    for kind, value in (
        ("listener", mix.listener_errors),
        ("room", mix.room_errors),
        ("send", mix.send_errors),
        ("rtcp", mix.rtcp_errors),
        ("stream_failed", mix.streams_failed),
        ("room_failed", mix.rooms_failed),
    ):
        errors.add_metric([kind], value)
    yield errors
    yield _counter("chorus_rtcp_sent", "RTCP compound packets sent", mix.rtcp_sent)
    yield _counter("chorus_rtcp_received", "RTCP compound packets received", mix.rtcp_received)


def _quality(quality: dict[tuple[RoomId, ParticipantId], StreamQuality]) -> Iterator[Metric]:
    """Per audio stream (room, participant): RFC 3550 §6.4 reception figures both ways."""
    labels = ["room", "participant"]
    families = {
        "received": GaugeMetricFamily(
            "chorus_rtp_packets_received", "RTP packets received on the stream", labels=labels
        ),
        "lost": GaugeMetricFamily(
            "chorus_rtp_packets_lost",
            "Cumulative packets lost on the stream (RFC 3550 §6.4.1: may be negative)",
            labels=labels,
        ),
        "fraction": GaugeMetricFamily(
            "chorus_rtp_fraction_lost", "Loss over the last report interval, 0..1", labels=labels
        ),
        "jitter": GaugeMetricFamily(
            "chorus_rtp_jitter_seconds", "Interarrival jitter we measure (A.8)", labels=labels
        ),
        "remote_fraction": GaugeMetricFamily(
            "chorus_rtp_remote_fraction_lost",
            "Loss the participant reports of our stream to it, 0..1",
            labels=labels,
        ),
        "remote_jitter": GaugeMetricFamily(
            "chorus_rtp_remote_jitter_seconds",
            "Jitter the participant reports of our stream to it",
            labels=labels,
        ),
        "rtt": GaugeMetricFamily(
            "chorus_rtp_rtt_seconds", "Round-trip time from LSR/DLSR (§6.4.1)", labels=labels
        ),
    }
    for (room, participant), q in sorted(quality.items()):
        key = [str(room), str(participant)]
        families["received"].add_metric(key, q.packets_received)
        families["lost"].add_metric(key, q.packets_lost)
        families["fraction"].add_metric(key, q.fraction_lost)
        families["jitter"].add_metric(key, q.jitter)
        if q.remote_fraction_lost is not None:
            families["remote_fraction"].add_metric(key, q.remote_fraction_lost)
        if q.remote_jitter is not None:
            families["remote_jitter"].add_metric(key, q.remote_jitter)
        if q.rtt is not None:
            families["rtt"].add_metric(key, q.rtt)
    yield from families.values()
