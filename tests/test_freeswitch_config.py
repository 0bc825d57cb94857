"""`[audio] engine` and `[freeswitch]`: parsed, validated, errors naming the key, and the
engine chosen by build_server."""

from __future__ import annotations

from pathlib import Path

import pytest

from control.cli import build_server
from control.config import ConfigError, FreeSwitchNode, parse_config
from control.media.freeswitch import FreeSwitchEngine
from control.media.mixer import EmbeddedMixer

NODE = {"sip": "127.0.0.1:5080", "esl": "127.0.0.1:8021", "password": "s3cret"}


def test_defaults_are_the_embedded_mixer() -> None:
    config = parse_config({})
    assert config.audio.engine == "embedded"
    assert config.freeswitch.nodes == ()


def test_nodes_are_parsed() -> None:
    config = parse_config(
        {
            "audio": {"engine": "freeswitch"},
            "freeswitch": {
                "nodes": [NODE, {**NODE, "sip": "[::1]:5090", "esl": "127.0.0.2:8022"}],
                "failover_after": 2,
                "reconnect_max": 4,
            },
        }
    )
    assert config.freeswitch.nodes == (
        FreeSwitchNode("127.0.0.1", 5080, "127.0.0.1", 8021, "s3cret"),
        FreeSwitchNode("::1", 5090, "127.0.0.2", 8022, "s3cret"),
    )
    assert config.freeswitch.failover_after == 2 and config.freeswitch.reconnect_max == 4


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"audio": {"engine": "asterisk"}}, "audio.engine"),
        ({"audio": {"engine": "freeswitch"}}, "freeswitch.nodes"),
        ({"freeswitch": {"nodes": [{**NODE, "sip": "fs1:5080"}]}}, "freeswitch.nodes[0].sip"),
        ({"freeswitch": {"nodes": [{**NODE, "esl": "127.0.0.1"}]}}, "freeswitch.nodes[0].esl"),
        ({"freeswitch": {"nodes": [{**NODE, "password": ""}]}}, "freeswitch.nodes[0].password"),
        ({"freeswitch": {"nodes": [{**NODE, "weight": 2}]}}, "freeswitch.nodes[0].weight"),
        ({"freeswitch": {"nodes": [NODE, NODE]}}, "freeswitch.nodes"),
        ({"freeswitch": {"answer_timeout": 0}}, "freeswitch.answer_timeout"),
    ],
)
def test_bad_values_name_their_key(data: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as failed:
        parse_config(data)
    assert failed.value.key == key


async def test_build_server_picks_the_engine(tmp_path: Path) -> None:
    base = {"server": {"spool_dir": str(tmp_path)}, "msrp": {"listen": ["tcp:127.0.0.1:0"]}}
    embedded = build_server(parse_config(base))
    assert isinstance(embedded.applications["conference"].engine, EmbeddedMixer)  # type: ignore[attr-defined]
    pool = {"audio": {"engine": "freeswitch"}, "freeswitch": {"nodes": [NODE]}}
    server = build_server(parse_config({**base, **pool}))
    engine = server.applications["conference"].engine  # type: ignore[attr-defined]
    assert isinstance(engine, FreeSwitchEngine)
    await engine.close()
