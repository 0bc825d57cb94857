"""The ``chorus`` command: ``chorus serve [--config FILE]`` and ``chorus check-config FILE``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from control.conference import ConferenceApp, ConferenceLimits
from control.config import Config, ConfigError, load_config
from control.echo import EchoApp
from control.echo.app import EchoLimits
from control.echo.files import EchoFiles
from control.files.spool import FileSpool
from control.media.mixer import EmbeddedMixer
from control.media.srtp import SrtpPolicy
from control.server import Server


def build_server(config: Config) -> Server:
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
            files=EchoFiles(
                FileSpool(config.server.spool_dir, max_file_bytes=config.files.max_file_bytes)
            ),
        ),
    )
    media_host = config.sip.advertised_address or config.sip.listen[0].host
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
            ),
        ),
    )
    return server


async def serve(config: Config, ready: asyncio.Event | None = None) -> None:
    server = build_server(config)
    await server.start()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    logging.getLogger("chorus").info("chorus ready")
    print("chorus ready", flush=True)
    if ready is not None:
        ready.set()
    await stop.wait()
    logging.getLogger("chorus").info("shutting down")
    await server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="chorus", description="Chorus SIP conference server")
    commands = parser.add_subparsers(dest="command", required=True)
    serve_cmd = commands.add_parser("serve", help="run the server")
    serve_cmd.add_argument("--config", type=Path, help="TOML configuration file")
    check = commands.add_parser("check-config", help="validate a configuration file")
    check.add_argument("config", type=Path)
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"chorus: configuration error: {exc}", file=sys.stderr)
        return 2
    if args.command == "check-config":
        print("configuration OK")
        return 0
    logging.basicConfig(
        level=config.server.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        asyncio.run(serve(config))
    except OSError as exc:
        print(f"chorus: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
