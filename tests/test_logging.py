"""``[server] log_format`` (control/logs.py): JSON lines with time, level, logger, message
and the fields the code passes with ``extra=``; a real ``chorus serve`` with
``log_format = "json"`` writes nothing but JSON objects, one a line, and a participant's
join and leave carry the room and the Call-ID as fields of their own."""

from __future__ import annotations

import datetime as dt
import io
import json
import logging

import pytest

from control.config import ConfigError, parse_config
from control.logs import JsonFormatter, configure_logging
from tests.peers.chatclient import ChatClient
from tests.peers.chorus import ChorusProcess
from tests.peers.wait import wait_until


def _record(message: str, *args: object, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("chorus.test", logging.WARNING, __file__, 1, message, args, None)
    for key, value in extra.items():
        setattr(record, key, value)
    return record


def test_a_record_is_one_json_object_with_its_extras() -> None:
    line = JsonFormatter().format(
        _record("room %s: %s", "team@example.com", "two\nlines", room="team@example.com", n=3)
    )
    assert "\n" not in line
    data = json.loads(line)
    assert data["level"] == "WARNING" and data["logger"] == "chorus.test"
    assert data["message"] == "room team@example.com: two\nlines"
    assert data["room"] == "team@example.com" and data["n"] == 3
    when = dt.datetime.fromisoformat(data["time"].replace("Z", "+00:00"))
    assert when.tzinfo is not None and when.utcoffset() == dt.timedelta(0)
    assert set(data) == {"time", "level", "logger", "message", "room", "n"}


def test_extras_never_overwrite_the_core_fields_and_odd_values_are_strings() -> None:
    data = json.loads(JsonFormatter().format(_record("hello", level="fake", peer=object())))
    assert data["level"] == "WARNING" and data["extra_level"] == "fake"
    assert data["peer"].startswith("<object object")


def test_an_exception_is_a_field() -> None:
    try:
        raise ValueError("bad input")
    except ValueError:
        record = logging.LogRecord(
            "chorus",
            logging.ERROR,
            __file__,
            1,
            "failed",
            (),
            exc_info=__import__("sys").exc_info(),
        )
    data = json.loads(JsonFormatter().format(record))
    assert data["message"] == "failed"
    assert "ValueError: bad input" in data["exception"]


def test_configure_logging_json_and_text() -> None:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        for fmt, check in (
            ("json", lambda line: json.loads(line)["message"] == "hi 1"),
            ("text", lambda line: line.endswith("INFO chorus.x: hi 1")),
        ):
            out = io.StringIO()
            configure_logging("INFO", fmt, out)
            logging.getLogger("chorus.x").info("hi %d", 1)
            logging.getLogger("chorus.x").debug("not at INFO")
            lines = out.getvalue().splitlines()
            assert len(lines) == 1 and check(lines[0]), (fmt, lines)
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        logging.captureWarnings(False)


def test_log_format_is_parsed() -> None:
    assert parse_config({}).server.log_format == "text"
    assert parse_config({"server": {"log_format": "json"}}).server.log_format == "json"
    with pytest.raises(ConfigError, match="server.log_format"):
        parse_config({"server": {"log_format": "xml"}})


@pytest.mark.timeout(120)
async def test_chorus_serve_writes_json_lines() -> None:
    with ChorusProcess({"server": {"log_format": "json"}}) as chorus:
        async with ChatClient("alice", "Alice") as alice:
            session = await alice.join(chorus, "logged")
            await session.leave()

        def lines() -> list[dict[str, object]]:
            return [json.loads(line) for line in chorus.log().splitlines() if line.strip()]

        def left() -> bool:
            return any("left logged@" in str(d["message"]) for d in lines())

        assert await wait_until(left), chorus.log()
        records = lines()
    assert all({"time", "level", "logger", "message"} <= set(d) for d in records)
    assert any(d["logger"] == "chorus" and d["message"] == "chorus ready" for d in records)
    ours = [d for d in records if d["logger"] == "chorus.conference.room"]
    joined = [d for d in ours if " joined logged@" in str(d["message"])]
    gone = [d for d in ours if "left logged@" in str(d["message"])]
    assert len(joined) == len(gone) == 1, records
    assert joined[0]["room"] == gone[0]["room"] == "logged@127.0.0.1"
    assert joined[0]["call_id"] == gone[0]["call_id"] and joined[0]["call_id"]
    assert "chat" in str(joined[0]["message"])
