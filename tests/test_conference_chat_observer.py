"""The room observer (a cluster edge pins a room while it lives): told once when a room opens
and once when its last participant leaves, through the server in this process."""

from __future__ import annotations

from pathlib import Path

from control.conference import ConferenceApp
from control.media.engine import RoomId
from tests.peers.inprocess import running_server
from tests.peers.rtp_endpoint import RtpEndpoint
from tests.peers.wait import wait_until
from tests.test_conference import join, leave


class RecordingObserver:
    def __init__(self) -> None:
        self.calls: list[tuple[str, RoomId]] = []

    def room_opened(self, room: RoomId) -> None:
        self.calls.append(("opened", room))

    def room_closed(self, room: RoomId) -> None:
        self.calls.append(("closed", room))


async def test_observer_sees_a_room_open_once_and_close_once(tmp_path: Path) -> None:
    observer = RecordingObserver()
    async with running_server(tmp_path / "spool", rtp={"codecs": ["PCMU"]}) as (server, port):
        app = server.applications["conference"]
        assert isinstance(app, ConferenceApp)
        app.room_observer = observer

        class _Target:
            sip_port = port

            def log(self) -> str:
                return ""

        first = await join(_Target(), "Pinned", RtpEndpoint("PCMU", 8000, 0, seed=1))  # type: ignore[arg-type]
        second = await join(_Target(), "pinned", RtpEndpoint("PCMU", 8000, 0, seed=2))  # type: ignore[arg-type]
        await leave(first)
        assert observer.calls == [("opened", RoomId("pinned@127.0.0.1"))]
        await leave(second)
        assert await wait_until(lambda: len(observer.calls) == 2)
    assert observer.calls == [
        ("opened", RoomId("pinned@127.0.0.1")),
        ("closed", RoomId("pinned@127.0.0.1")),
    ]
