"""The ``chorus`` command: ``chorus serve [--config FILE]``, ``chorus check-config FILE``,
``chorus drain [--config FILE] [--undo]`` (cluster mode: control/cluster.py) and the admin
commands (control/admincli.py).

Each command imports what it runs when it runs: ``--version``, ``check-config`` and the admin
commands (which only talk HTTP to a running node) never load the server, aiohttp or slixmpp.
The node's wiring is control/node.py; ``build_server``, ``serve``, ``gateway_settings`` and
``muc_gateway`` are still importable from here.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from control import admincli, package_version

if TYPE_CHECKING:
    from control.node import build_server, gateway_settings, muc_gateway, serve

__all__ = ["build_server", "gateway_settings", "main", "muc_gateway", "serve"]

_NODE = frozenset(("build_server", "gateway_settings", "muc_gateway", "serve"))


def __getattr__(name: str) -> Any:
    """``from control.cli import build_server`` (tests, bench): control/node.py's, loaded then."""
    if name in _NODE:
        from control import node

        return getattr(node, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="chorus", description="Chorus SIP conference server")
    parser.add_argument("--version", action="version", version=f"chorus {package_version()}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve_cmd = commands.add_parser("serve", help="run the server")
    serve_cmd.add_argument("--config", type=Path, help="TOML configuration file")
    check = commands.add_parser("check-config", help="validate a configuration file")
    check.add_argument("config", type=Path)
    drain = commands.add_parser(
        "drain", help="drain a running cluster node: it keeps its rooms, takes no new ones"
    )
    drain.add_argument("--config", type=Path, help="the node's TOML configuration file")
    drain.add_argument("--undo", action="store_true", help="take new rooms again")
    admincli.add_commands(commands)  # rooms, room show, kick, mute, lock, pin, end, api-token
    args = parser.parse_args(argv)  # --version and --help exit here, having loaded nothing
    from control.config import ConfigError, load_config

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"chorus: configuration error: {exc}", file=sys.stderr)
        return 2
    if args.command == "check-config":
        print("configuration OK")
        return 0
    if args.command in admincli.COMMANDS:
        return admincli.run(args, config)
    if args.command == "drain":
        from control.cluster import signal_running_node

        try:
            pid = signal_running_node(config.pid_path(), undo=args.undo)
        except OSError as exc:
            print(f"chorus: {exc}", file=sys.stderr)
            return 1
        print(f"chorus: node {pid} {'takes new rooms again' if args.undo else 'drains'}")
        return 0
    import asyncio

    from control.logs import configure_logging
    from control.node import serve
    from control.server import loop_factory

    configure_logging(config.server.log_level, config.server.log_format)
    try:
        with asyncio.Runner(loop_factory=loop_factory(config.server.event_loop)) as runner:
            runner.run(serve(config))
    except OSError as exc:
        print(f"chorus: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
