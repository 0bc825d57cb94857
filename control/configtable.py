"""One TOML table read with its keys checked, and the scalar checks several sections share.

control/config.py parses each section with a `Section`; a gateway's own section parser
(control/xmpp/config.py) uses the same reader, so errors name keys the same way everywhere and
no section module imports control/config.py (which imports them).
"""

from __future__ import annotations

import ipaddress
from typing import Any

from control.settings import ConfigError


class Section:
    """Reads one TOML table, checking types and rejecting unknown keys."""

    def __init__(self, name: str, data: Any) -> None:
        if not isinstance(data, dict):
            raise ConfigError(name, "must be a table")
        self.name = name
        self.data: dict[str, Any] = dict(data)

    def key(self, key: str) -> str:
        return f"{self.name}.{key}"

    def take(self, key: str, kind: type | tuple[type, ...], default: Any) -> Any:
        if key not in self.data:
            return default
        value = self.data.pop(key)
        if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
            raise ConfigError(self.key(key), f"expected {kind_name(kind)}, got a boolean")
        if not isinstance(value, kind):
            raise ConfigError(self.key(key), f"expected {kind_name(kind)}, got {value!r}")
        return value

    def number(self, key: str, default: float, *, minimum: float = 0.0) -> float:
        value = float(self.take(key, (int, float), default))
        if value < minimum:
            raise ConfigError(self.key(key), f"must be at least {minimum}")
        return value

    def integer(self, key: str, default: int, *, minimum: int = 0) -> int:
        value = int(self.take(key, int, default))
        if value < minimum:
            raise ConfigError(self.key(key), f"must be at least {minimum}")
        return value

    def strings(self, key: str, default: tuple[str, ...]) -> tuple[str, ...]:
        value = self.take(key, list, list(default))
        for index, item in enumerate(value):
            if not isinstance(item, str):
                raise ConfigError(f"{self.key(key)}[{index}]", "expected a string")
        return tuple(value)

    def finish(self) -> None:
        if self.data:
            raise ConfigError(self.key(sorted(self.data)[0]), "unknown key")


def kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names = {str: "a string", int: "an integer", float: "a number", list: "a list", dict: "a table"}
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def host_port(key: str, text: Any) -> tuple[str, int]:
    if not isinstance(text, str):
        raise ConfigError(key, "expected a string HOST:PORT")
    host, sep, port_text = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not port_text.isdigit() or not 0 < int(port_text) <= 65535:
        raise ConfigError(key, f"{text!r}: expected HOST:PORT")
    try:
        ipaddress.ip_address(host)
    except ValueError as exc:
        raise ConfigError(key, f"{host!r} is not an IP address") from exc
    return host, int(port_text)


def domain(key: str, text: str) -> str:
    name = text.strip().lower().rstrip(".")
    labels = name.split(".")
    if (
        not name
        or len(name) > 253
        or any(
            not label or len(label) > 63 or not all(c.isalnum() or c == "-" for c in label)
            for label in labels
        )
    ):
        raise ConfigError(key, f"{text!r} is not a domain name")
    return name


def ip_address(key: str, text: str) -> str:
    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError:
        raise ConfigError(key, f"{text!r} is not an IP address") from None
