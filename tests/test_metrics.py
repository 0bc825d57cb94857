"""/metrics in-process (control/metrics.py): one registry per node, so two servers in one
process report their own traffic; the counters move by exactly the requests sent (raw SIP
over loopback UDP); the live model's gauges; the web route's bearer-token guard and
``[web] metrics_public``; method names a peer invents count as "other"."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from control.conference import ConferenceApp
from control.conference.screen import ScreenBoard, ScreenLimits
from control.config import ConfigError, ListenAddress, parse_config
from control.metrics import MetricSources, NodeMetrics
from control.server import Server
from control.sip.useragent import SipCounters, counted_method
from control.web import TokenSigner, WebServer
from tests.peers.inprocess import running_server
from tests.peers.rawsip import RawUdp, parse_response, raw_request

TOKEN = "metrics-token-0123456789"

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(text: str) -> Samples:
    """Every sample of an exposition, by (name, sorted labels)."""
    found: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return found


def metrics_of(server: Server) -> NodeMetrics:
    conference = server.applications["conference"]
    assert isinstance(conference, ConferenceApp)
    return NodeMetrics(MetricSources(server.ua, server.msrp, conference=conference))


async def scrape(metrics: NodeMetrics) -> Samples:
    body, content_type = await metrics.render()
    assert content_type.startswith("text/plain")
    return samples(body.decode())


async def options(port: int, count: int) -> None:
    def send() -> None:
        with RawUdp() as udp:
            for _ in range(count):
                udp.send(raw_request("OPTIONS", port, local_port=udp.port), port)
                data = udp.receive(10.0)
                assert data is not None and parse_response(data).status == 200

    await asyncio.to_thread(send)


async def test_two_servers_in_one_process_count_their_own_requests(tmp_path: Path) -> None:
    async with (
        running_server(tmp_path / "a", rtp={}) as (server_a, port_a),
        running_server(tmp_path / "b", rtp={}) as (server_b, port_b),
    ):
        metrics_a, metrics_b = metrics_of(server_a), metrics_of(server_b)
        await options(port_a, 3)
        await options(port_b, 1)
        a, b = await scrape(metrics_a), await scrape(metrics_b)
    received = "chorus_sip_requests_received_total"
    finals = "chorus_sip_responses_sent_total"
    assert a[received, (("method", "OPTIONS"),)] == 3
    assert b[received, (("method", "OPTIONS"),)] == 1
    assert a[finals, (("class", "2xx"), ("method", "OPTIONS"))] == 3
    assert b[finals, (("class", "2xx"), ("method", "OPTIONS"))] == 1
    # No call was made: every outcome is there, at zero; the live model is empty.
    for klass in ("2xx", "3xx", "4xx", "5xx", "6xx"):
        assert a["chorus_calls_total", (("outcome", klass),)] == 0
    assert a["chorus_rooms", ()] == 0 and a["chorus_participants", ()] == 0
    for media in ("audio", "chat", "file", "screen"):
        assert a["chorus_participants_by_media", (("media", media),)] == 0
    assert a["chorus_files_stored", ()] == 0
    assert a["chorus_mixer_participants", ()] == 0
    assert a["chorus_msrp_received_bytes_total", ()] == 0
    assert a["chorus_info", (("version", "0.1.0"),)] == 1


async def test_a_refused_call_counts_as_its_class(tmp_path: Path) -> None:
    """An INVITE whose offer has no acceptable stream: 488, a 4xx call outcome."""
    async with running_server(tmp_path, rtp={}) as (server, port):
        metrics = metrics_of(server)
        sdp = (
            b"v=0\r\no=t 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            b"m=video 4000 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n"
        )

        def call() -> int:
            with RawUdp() as udp:
                udp.send(
                    raw_request("INVITE", port, user="room", body=sdp, local_port=udp.port), port
                )
                while (data := udp.receive(10.0)) is not None:
                    status = parse_response(data).status
                    if status >= 200:
                        return status
            return 0

        status = await asyncio.to_thread(call)
        found = await scrape(metrics)
    assert status == 488
    assert found["chorus_calls_total", (("outcome", "4xx"),)] == 1
    assert found["chorus_calls_total", (("outcome", "2xx"),)] == 0
    assert found["chorus_sip_requests_received_total", (("method", "INVITE"),)] == 1


def test_invented_methods_count_as_other() -> None:
    assert counted_method("INVITE") == "INVITE"
    assert counted_method("XYZZY") == "other"
    counters = SipCounters()
    assert not counters.calls


async def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str, str]:
    async with aiohttp.ClientSession() as http, http.get(url, headers=headers or {}) as resp:
        return resp.status, resp.headers.get("Content-Type", ""), await resp.text()


@pytest.mark.parametrize("public", [False, True])
async def test_the_route_wants_the_operator_token_unless_public(
    tmp_path: Path, public: bool
) -> None:
    async with running_server(tmp_path, rtp={}) as (server, _):
        web = WebServer(
            listen=ListenAddress("http", "127.0.0.1", 0),
            signer=TokenSigner(b"s" * 32, 60.0),
            screens=ScreenBoard(ScreenLimits()),
            metrics=metrics_of(server),
            metrics_token=None if public else TOKEN,
        )
        await web.start()
        try:
            assert web.bound is not None
            url = f"http://127.0.0.1:{web.bound[1]}/metrics"
            bare = await _get(url)
            wrong = await _get(url, {"Authorization": "Bearer " + "x" * 24})
            right = await _get(url, {"Authorization": f"Bearer {TOKEN}"})
            openmetrics = await _get(
                url,
                {"Authorization": f"Bearer {TOKEN}", "Accept": "application/openmetrics-text"},
            )
        finally:
            await web.stop()
    if public:
        assert bare[0] == wrong[0] == 200
    else:
        assert bare[0] == wrong[0] == 401
        assert "chorus_rooms" not in bare[2]
    assert right[0] == 200 and right[1].startswith("text/plain")
    assert samples(right[2])["chorus_rooms", ()] == 0
    assert openmetrics[0] == 200 and openmetrics[1].startswith("application/openmetrics-text")
    assert openmetrics[2].rstrip().endswith("# EOF")


def test_metrics_public_is_parsed() -> None:
    assert parse_config({}).web.metrics_public is False
    assert parse_config({"web": {"metrics_public": True}}).web.metrics_public is True
    with pytest.raises(ConfigError, match="web.metrics_public"):
        parse_config({"web": {"metrics_public": "yes"}})
