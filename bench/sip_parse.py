"""CPU per echo call spent in SIP parse/serialise (message.py, headers.py, uri.py) alone.

    python -m bench.sip_parse                       # this tree, 7 rounds of 3,000 calls
    python -m bench.sip_parse --against /tmp/base   # interleaved with another tree's code
    python -m bench.sip_parse --profile             # cProfile of the same sequence

One call is the server side of SIPp's ``uac_echo`` (tests/sipp/uac_echo.xml) against the echo
application, byte for byte as SIPp sends it: the INVITE with its SDP offer, the ACK and the
BYE are parsed; the 200 with the SDP answer and the 200 to the BYE are built from the requests
and serialised. Between those steps the bench reads each message the way the stack does
(recorded with sys.setprofile over real echo calls through ``chorus serve``: the transport's
Via stamping, transaction and dialog matching, the application's Require, Contact,
Content-Type and session-timer reads, the dialog's set-up, the responses' headers), so the
lru caches of the URI and header parsers hit and miss as they do under load: every call has
its own Call-ID, tags and branches. The 100 (Trying) is not built: the UA sends it only for an
INVITE still unanswered after 0.1 s, and echo answers at once.

CPU time is ``time.process_time`` over a round of calls; the figure is the median over the
rounds of microseconds per call. With ``--against ROOT`` every round runs in a fresh child
process, alternately for this tree and for ROOT's ``control`` package (ROOT first on
``sys.path``), so a drift of a shared machine's speed hits both sides alike; the ratio of the
medians is printed. The sequence uses only the three modules' public API, so it runs against
older trees unchanged.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from control.sip.headers import parse_via
from control.sip.message import Request, parse_message
from control.sip.uri import NameAddr, SipUri, parse_uri, split_header_list

ROOT = Path(__file__).resolve().parent.parent

SERVER = "127.0.0.1:56844"
CLIENT = "127.0.0.1:45123"

# What SIPp 3.x sends for uac_echo.xml (captured with [server] trace_sip): CRLF line ends,
# Content-Length padded, the SDP offer of the scenario.
OFFER = (
    "v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n"
    "t=0 0\r\nm=audio 6000 RTP/AVP 8 0 9 101\r\na=rtpmap:8 PCMA/8000\r\n"
    "a=rtpmap:0 PCMU/8000\r\na=rtpmap:9 G722/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
    "a=fmtp:101 0-15\r\na=ptime:30\r\na=sendrecv\r\n\r\n"
)
INVITE = (
    "INVITE sip:echo@{server} SIP/2.0\r\n"
    "Via: SIP/2.0/UDP {client};branch=z9hG4bK-14936-{n}-0\r\n"
    'From: "sipp" <sip:sipp@{client}>;tag=14936SIPpTag00{n}\r\n'
    "To: <sip:echo@{server}>\r\n"
    "Call-ID: {n}-14936@127.0.0.1\r\n"
    "CSeq: 1 INVITE\r\n"
    "Contact: <sip:sipp@{client};transport=UDP>\r\n"
    "Max-Forwards: 70\r\n"
    "Subject: Chorus test call\r\n"
    "Content-Type: application/sdp\r\n"
    "Content-Length: {length:>5}\r\n"
    "\r\n"
)
IN_DIALOG = (
    "{method} sip:echo@{server} SIP/2.0\r\n"
    "Via: SIP/2.0/UDP {client};branch=z9hG4bK-14936-{n}-{index}\r\n"
    'From: "sipp" <sip:sipp@{client}>;tag=14936SIPpTag00{n}\r\n'
    "To: <sip:echo@{server}>;tag={to_tag}\r\n"
    "Call-ID: {n}-14936@127.0.0.1\r\n"
    "CSeq: {cseq} {method}\r\n"
    "Contact: <sip:sipp@{client};transport=UDP>\r\n"
    "Max-Forwards: 70\r\n"
    "Content-Length: 0\r\n"
    "\r\n"
)
ANSWER = (
    b"v=0\r\no=chorus 1370346039 1370346039 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n"
    b"t=0 0\r\nm=audio 50000 RTP/AVP 8 101\r\na=rtpmap:8 PCMA/8000\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=sendrecv\r\n"
)
ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, MESSAGE, SUBSCRIBE, NOTIFY, REFER, INFO"


def call_messages(n: int) -> tuple[bytes, bytes, bytes, str]:
    """The INVITE, ACK and BYE of call ``n`` as SIPp sends them, and our To tag."""
    to_tag = f"t{n:011d}"
    invite = INVITE.format(server=SERVER, client=CLIENT, n=n, length=len(OFFER)) + OFFER
    fields = {"server": SERVER, "client": CLIENT, "n": n, "to_tag": to_tag}
    ack = IN_DIALOG.format(method="ACK", index=5, cseq=1, **fields)
    bye = IN_DIALOG.format(method="BYE", index=9, cseq=2, **fields)
    return invite.encode(), ack.encode(), bye.encode(), to_tag


def one_call(invite: bytes, ack: bytes, bye: bytes, to_tag: str) -> tuple[bytes, bytes]:
    """What the stack asks of message/headers/uri for one echo call, in order."""

    def received(data: bytes) -> Request:
        request = parse_message(data)
        assert isinstance(request, Request)
        raw = request.headers.get_raw("Via")  # transport.stamp_via: sent-by is the source
        parse_via(split_header_list(raw[0])[0])
        request.top_via.branch  # noqa: B018 - matching.server_key
        return request

    def dialog_id(request: Request) -> None:
        request.to.tag  # noqa: B018 - dialog.dialog_id_of_request
        request.from_.tag  # noqa: B018
        request.call_id  # noqa: B018

    def session_timer_reads(request: Request) -> None:
        request.headers.get("Session-Expires")
        request.headers.get("Min-SE")
        request.headers.get_all("Supported")
        request.headers.get_all("Require")

    # INVITE: transport, transaction, UA, server routing, echo, session accept.
    request = received(invite)
    request.cseq  # noqa: B018 - ServerTransaction
    request.top_via.branch  # noqa: B018
    dialog_id(request)
    request.headers.get_all("Require")  # server.handle_request
    request.contacts  # noqa: B018
    content_type = request.content_type
    assert content_type is not None and content_type.mime == "application/sdp"
    session_timer_reads(request)
    request.headers.get("X-Chorus-App")  # ApplicationMap.resolve
    uri = request.uri
    assert isinstance(uri, SipUri)
    uri.unescaped_user()
    offer_type = request.content_type  # app.parse_offer
    assert offer_type is not None and offer_type.mime == "application/sdp"
    body = request.body
    caller = request.from_  # session.remote_identity
    str(request.to.uri)  # echo: CPIM addresses
    str(caller.uri)
    request.headers.get_all("Record-Route")  # session._secure_request
    request.contacts  # noqa: B018 - Dialog.as_uas
    request.from_.tag  # noqa: B018
    request.call_id  # noqa: B018
    local_party = request.to.with_tag(to_tag)
    request.headers.get_all("Record-Route")
    request.cseq.number  # noqa: B018
    session_timer_reads(request)
    response = request.make_response(
        200, to_tag=to_tag, body=ANSWER, content_type="application/sdp"
    )
    contact = NameAddr(parse_uri(f"sip:echo@{SERVER}"))
    response.headers.add("Contact", str(contact))
    response.headers.add("Allow", ALLOW)
    response.headers.add("Supported", "timer")
    response.headers.add("Session-Expires", "1800;refresher=uas")
    request.to.tag  # noqa: B018 - counters.count_final
    response.to.tag  # noqa: B018 - IncomingRequest.send_response
    response.cseq  # noqa: B018 - ServerTransaction.send_response
    ok_invite = response.serialize()
    assert body and local_party.tag == to_tag

    # ACK: transport, matching, dialog, session.handle_ack (against the 2xx).
    request = received(ack)
    dialog_id(request)
    request.cseq.number  # noqa: B018
    response.cseq.number  # noqa: B018

    # BYE: transport, transaction, dialog, UA respond.
    request = received(bye)
    request.cseq  # noqa: B018
    request.top_via.branch  # noqa: B018
    dialog_id(request)
    request.cseq.number  # noqa: B018
    request.to.tag  # noqa: B018 - IncomingRequest.respond
    response = request.make_response(200, to_tag=None)
    if "Server" not in response.headers:
        response.headers.add("Server", "Chorus/0.1")
    response.to.tag  # noqa: B018
    response.cseq  # noqa: B018
    return ok_invite, response.serialize()


def run_round(calls: int, first: int) -> float:
    """CPU microseconds per call over ``calls`` calls numbered from ``first``."""
    messages = [call_messages(n) for n in range(first, first + calls)]
    start = time.process_time()
    for invite, ack, bye, to_tag in messages:
        one_call(invite, ack, bye, to_tag)
    return (time.process_time() - start) / calls * 1e6


def measure(calls: int, rounds: int, warmup: int) -> list[float]:
    run_round(warmup, 1)
    return [run_round(calls, 10_000 + i * calls) for i in range(rounds)]


def check_output() -> None:
    """The two responses of call 1, for a reader to compare with a capture."""
    ok_invite, ok_bye = one_call(*call_messages(1))
    sys.stdout.write(ok_invite.decode() + "\n=====\n" + ok_bye.decode() + "\n")


def child_round(root: Path, calls: int, warmup: int, index: int) -> float:
    """One round in a fresh interpreter importing ``control`` from ``root``."""
    env = dict(os.environ, PYTHONPATH=str(root))
    code = (
        "import sys, json, importlib.util as u; sys.path.insert(0, sys.argv[1]);"
        "spec = u.spec_from_file_location('sip_parse', sys.argv[2]);"
        "b = u.module_from_spec(spec); spec.loader.exec_module(b);"
        "import control.sip.message as m;"
        "assert m.__file__.startswith(sys.argv[1]), m.__file__;"
        "b.run_round(int(sys.argv[4]), 1);"
        "print(json.dumps(b.run_round(int(sys.argv[3]), 10_000 + int(sys.argv[5]))))"
    )
    script = str(Path(__file__).resolve())
    out = subprocess.run(
        [sys.executable, "-c", code, str(root), script, str(calls), str(warmup), str(index)],
        env=env,
        check=True,
        capture_output=True,
        text=True,
        cwd="/",
    ).stdout
    return float(out.strip().splitlines()[-1])


def interleaved(against: Path, calls: int, rounds: int, warmup: int) -> dict[str, Any]:
    mine: list[float] = []
    theirs: list[float] = []
    for index in range(rounds):
        order = [(ROOT, mine), (against, theirs)]
        if index % 2:
            order.reverse()
        for root, into in order:
            into.append(child_round(root, calls, warmup, index * calls))
    return {
        "this_tree_us_per_call": [round(x, 1) for x in mine],
        "against_us_per_call": [round(x, 1) for x in theirs],
        "this_tree_median": round(statistics.median(mine), 1),
        "against_median": round(statistics.median(theirs), 1),
        "ratio": round(statistics.median(mine) / statistics.median(theirs), 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=3000, help="calls per round")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=500, help="calls before the rounds")
    parser.add_argument("--against", type=Path, help="another tree to interleave with")
    parser.add_argument("--profile", action="store_true", help="cProfile one round")
    parser.add_argument("--show", action="store_true", help="print call 1's two responses")
    args = parser.parse_args()
    if args.show:
        check_output()
        return 0
    if args.profile:
        run_round(args.warmup, 1)
        profiler = cProfile.Profile()
        profiler.enable()
        run_round(args.calls, 10_000)
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(30)
        return 0
    result: dict[str, Any] = {"benchmark": "sip_parse", "calls_per_round": args.calls}
    if args.against is not None:
        result.update(interleaved(args.against.resolve(), args.calls, args.rounds, args.warmup))
    else:
        figures = measure(args.calls, args.rounds, args.warmup)
        result["us_per_call"] = [round(x, 1) for x in figures]
        result["median_us_per_call"] = round(statistics.median(figures), 1)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
