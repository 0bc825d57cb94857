"""SIP over TLS with peers Chorus did not write: baresip into a room, and Kamailio as the edge.

1. Two baresip phones dial a room with `;transport=tls` straight at Chorus's TLS listener.
   Every request of both calls arrives over TLS, the answers' Contacts are `sip:…;transport=tls`
   (RFC 3261 §12.1.1: the Request-URI was not SIPS), and each phone hears the other's tone
   and not its own (mix-minus, by FFT).
2. The production edge (deploy/kamailio with `WITH_TLS`) in front of Chorus, TLS on both
   hops: baresip → Kamailio's TLS listener → the dispatcher destination
   `sip:chorus;transport=tls`. Chorus's trace shows each request on its TLS listener with
   two TLS Vias (Kamailio's on top, baresip's below it) and a TLS Record-Route; the phones
   hear each other. Kamailio checks Chorus's certificate (`TLS_VERIFY`, against Chorus's
   own self-signed certificate); trusting some other certificate instead, the call never
   reaches Chorus — so the hop really was TLS, and verified.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from control.tls import generate_self_signed
from tests.peers.baresip import BaresipProcess, write_wav
from tests.peers.chorus import ChorusProcess
from tests.peers.conversation import Talker, assert_each_hears_the_others, converse
from tests.peers.kamailio import EdgeTls, KamailioProcess, check_config
from tests.peers.ports import free_ports
from tests.peers.siptrace import call_messages, invite_answer

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.peer("baresip"),
]

TALKERS = (Talker("alice", "PCMU/8000/1", 700.0), Talker("bob", "G722/16000/1", 1900.0))


@pytest.fixture(scope="module")
def chorus() -> Iterator[ChorusProcess]:
    with ChorusProcess() as process:
        yield process
        assert process.alive, process.log()


def chorus_certificate(chorus: ChorusProcess) -> Path:
    """The self-signed certificate Chorus generated into its spool on first start."""
    return chorus.workdir / "spool" / "tls" / "chorus.crt"


def edge_tls(directory: Path, trusted: Path) -> EdgeTls:
    generate_self_signed(directory / "edge.crt", directory / "edge.key", ["127.0.0.1"])
    return EdgeTls(directory / "edge.crt", directory / "edge.key", trusted)


def test_baresips_over_tls_hear_each_other_in_a_room(chorus: ChorusProcess, tmp_path: Path) -> None:
    heard = converse(
        TALKERS,
        lambda _: f"sip:tls-room@127.0.0.1:{chorus.tls_port};transport=tls",
        tmp_path,
        ca_file=chorus_certificate(chorus),
        diagnostics=chorus.log,
    )
    assert_each_hears_the_others(heard)
    for h in heard:
        messages = call_messages(chorus.trace(), h.call_id)
        received = [m.method for m in messages if m.received]
        assert received[:1] == ["INVITE"] and {"ACK", "BYE"} <= set(received), received
        assert {m.transport for m in messages} == {"tls"}, [m.start_line for m in messages]
        contact = invite_answer(messages).header("Contact")
        assert contact.startswith("<sip:") and "transport=tls" in contact, contact


@pytest.mark.peer("kamailio")
def test_kamailio_tls_edge_in_front_of_chorus(chorus: ChorusProcess, tmp_path: Path) -> None:
    node = f"sip:127.0.0.1:{chorus.tls_port};transport=tls"
    tls = edge_tls(tmp_path, trusted=chorus_certificate(chorus))
    with KamailioProcess([node], tls=tls) as edge:
        heard = converse(
            TALKERS,
            lambda _: f"sip:edge-room@{edge.tls_address};transport=tls",
            tmp_path,
            ca_file=tls.certificate,
            diagnostics=lambda: f"{chorus.log()}\n--- kamailio ---\n{edge.log()[-4000:]}",
        )
        assert_each_hears_the_others(heard)
        for h in heard:
            messages = call_messages(chorus.trace(), h.call_id)
            requests = [m for m in messages if m.received and m.method]
            assert [m.method for m in requests][:1] == ["INVITE"], requests
            assert {"ACK", "BYE"} <= {m.method for m in requests}, requests
            for request in requests:
                # Kamailio -> Chorus: Chorus's TLS listener, Kamailio's TLS Via on top;
                # phone -> Kamailio: the phone's own Via below it says TLS too.
                assert request.transport == "tls", request.start_line
                assert request.via_transports() == ["tls", "tls"], request.headers_named("Via")
                top = request.headers_named("Via")[0]
                assert f"127.0.0.1:{edge.tls_port}" in top, top
            record_route = invite_answer(messages).header("Record-Route")
            assert f"127.0.0.1:{edge.tls_port};transport=tls" in record_route, record_route


@pytest.mark.peer("kamailio")
def test_kamailio_refuses_a_chorus_certificate_it_does_not_trust(
    chorus: ChorusProcess, tmp_path: Path
) -> None:
    node = f"sip:127.0.0.1:{chorus.tls_port};transport=tls"
    generate_self_signed(tmp_path / "other.crt", tmp_path / "other.key", ["127.0.0.1"])
    tls = edge_tls(tmp_path, trusted=tmp_path / "other.crt")
    source = write_wav(tmp_path / "tone.wav", TALKERS[0].wav_samples(5.0), TALKERS[0].rate)
    with (
        KamailioProcess([node], tls=tls, defines={"DS_FR_TIMER": 1000}) as edge,
        BaresipProcess(source, ca_file=tls.certificate) as ua,
    ):
        ua.dial(f"sip:untrusted@{edge.tls_address};transport=tls")
        closed = ua.wait_event("CALL_CLOSED", 40)
        assert "CALL_ESTABLISHED" not in ua.event_types(), ua.event_types()
        call_id = str(closed["id"])
        assert call_messages(chorus.trace(), call_id) == [], "the INVITE reached Chorus"
        assert str(closed.get("param", "")).startswith("503"), closed
        assert "certificate verify failed" in edge.log(), edge.log()[-3000:]


@pytest.mark.peer("kamailio")
def test_edge_config_with_tls_passes_kamailio_check(tmp_path: Path) -> None:
    sip, tls_port = free_ports(2)
    tls = edge_tls(tmp_path, trusted=tmp_path / "edge.crt")
    done = check_config(defines={"SIP_PORT": sip, **tls.defines(tls_port)})
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert f"tls: 127.0.0.1 [127.0.0.1]:{tls_port}" in output, output
    without = check_config(defines={"SIP_PORT": sip})
    assert "tls: " not in without.stdout + without.stderr  # TLS only when asked for
