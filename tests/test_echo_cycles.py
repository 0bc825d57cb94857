"""An ended echo call is freed by reference counting: it leaves nothing for the cyclic
collector (its offer, answer, reflector and RTCP state were ~70 objects per call that only
a collection freed, bench/sdp_answer.py's census). Driven in-process through
EchoApp.incoming_invite with bench.sdp_answer's stand-in call (already-ended session)."""

from __future__ import annotations

import asyncio
import gc

from bench.sdp_answer import make_app, make_offers, run_call


def test_an_ended_echo_call_leaves_no_cyclic_garbage() -> None:
    offers = make_offers(60)
    app = make_app()
    loop = asyncio.new_event_loop()
    enabled = gc.isenabled()
    try:
        loop.run_until_complete(run_call(app, offers[:10]))  # pool, caches, first-use state
        gc.collect()
        gc.disable()
        loop.run_until_complete(run_call(app, offers[10:]))
        assert gc.collect() == 0
    finally:
        if enabled:
            gc.enable()
        app.sockets.close()
        loop.close()
