"""Async JSON-RPC 2.0 client for the Kamailio edge proxy (jsonrpcs over xhttp).

A control node uses it to read and steer the edge: which control nodes the dispatcher
knows and in which state (`dispatcher.list`), taking a node out of rotation before a
restart (`dispatcher.set_state`), adding or removing nodes (`dispatcher.add` / `.remove`,
in memory only), reading and writing htable items (`htable.get` / `.setxs` / `.delete` /
`.dump`: the room pins of control/cluster.py) and reading counters (`stats.get_statistics`).

Requests and responses are built and parsed by jsonrpcclient; aiohttp carries them. Kamailio
takes positional parameters only (a JSON array), so `call()` accepts `*params` and nothing
else. Kamailio's error objects become `KamailioRpcError`, carrying the JSON-RPC code
(Kamailio uses HTTP-like codes: 500 "Method Not Found", 400 for bad parameters, ...).
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from jsonrpcclient import Error, Ok, parse, request

__all__ = [
    "DispatcherState",
    "DispatcherTarget",
    "KamailioRpc",
    "KamailioRpcError",
    "KamailioUnreachable",
    "parse_dispatcher_list",
    "parse_htable_dump",
    "parse_statistics",
]

JsonValue = str | int | float | bool | None | list[Any] | dict[str, Any]


class KamailioRpcError(Exception):
    """Kamailio answered with a JSON-RPC error object (or nonsense).

    `code` is the JSON-RPC error code Kamailio sent, None when there was no usable answer.
    """

    def __init__(self, method: str, message: str, code: int | None = None) -> None:
        super().__init__(f"{method}: {message}" + (f" ({code})" if code is not None else ""))
        self.method = method
        self.message = message
        self.code = code


class KamailioUnreachable(KamailioRpcError):
    """The HTTP exchange itself failed: connection refused, timeout, HTTP error status."""


class DispatcherState(enum.StrEnum):
    """States accepted by `dispatcher.set_state`.

    The probing variants also make Kamailio send OPTIONS to the node until it answers
    (only when probing is enabled in the config, `WITH_DS_PING`).
    """

    ACTIVE = "a"
    INACTIVE = "i"
    DISABLED = "d"
    TRYING = "t"
    ACTIVE_PROBING = "ap"
    INACTIVE_PROBING = "ip"


@dataclass(frozen=True, slots=True)
class DispatcherTarget:
    """One destination of a dispatcher set, as `dispatcher.list` reports it.

    `flags` is Kamailio's two-letter state: first letter A(ctive), I(nactive),
    D(isabled) or T(rying); second letter P(robing) or X (not probing).
    """

    setid: int
    uri: str
    flags: str
    priority: int = 0
    attrs: Mapping[str, Any] = field(default_factory=dict)

    @property
    def active(self) -> bool:
        return self.flags.upper().startswith("A")

    @property
    def probing(self) -> bool:
        return len(self.flags) > 1 and self.flags[1].upper() == "P"


def parse_dispatcher_list(result: Any) -> list[DispatcherTarget]:
    """Flatten `{"NRSETS": n, "RECORDS": [{"SET": {"ID": .., "TARGETS": [...]}}]}`."""
    if not isinstance(result, dict):
        raise KamailioRpcError("dispatcher.list", f"unexpected result {result!r}")
    targets: list[DispatcherTarget] = []
    for record in result.get("RECORDS") or []:
        ds_set = record.get("SET", {}) if isinstance(record, dict) else {}
        setid = int(ds_set.get("ID", 0))
        for entry in ds_set.get("TARGETS") or []:
            dest = entry.get("DEST", {}) if isinstance(entry, dict) else {}
            if "URI" not in dest:
                continue
            attrs = dest.get("ATTRS")
            targets.append(
                DispatcherTarget(
                    setid=setid,
                    uri=str(dest["URI"]),
                    flags=str(dest.get("FLAGS", "")),
                    priority=int(dest.get("PRIORITY", 0)),
                    attrs=attrs if isinstance(attrs, dict) else {},
                )
            )
    return targets


def parse_htable_dump(result: Any) -> dict[str, str | int]:
    """Flatten `[{"entry": n, "size": m, "slot": [{"name": k, "value": v, ...}]}, ...]`."""
    if not isinstance(result, list):
        raise KamailioRpcError("htable.dump", f"unexpected result {result!r:.200}")
    items: dict[str, str | int] = {}
    for entry in result:
        slot = entry.get("slot") if isinstance(entry, dict) else None
        for item in slot or []:
            if isinstance(item, dict) and "name" in item:
                value = item.get("value")
                items[str(item["name"])] = value if isinstance(value, int) else str(value)
    return items


def parse_statistics(result: Any) -> dict[str, int | str]:
    """Turn `["tmx:2xx_transactions = 4", ...]` into `{"tmx:2xx_transactions": 4, ...}`.

    Values that are not integers (a few core statistics) stay strings.
    """
    if not isinstance(result, list):
        raise KamailioRpcError("stats.get_statistics", f"unexpected result {result!r}")
    stats: dict[str, int | str] = {}
    for line in result:
        if not isinstance(line, str) or "=" not in line:
            continue
        name, _, value = line.partition("=")
        text = value.strip()
        try:
            stats[name.strip()] = int(text)
        except ValueError:
            stats[name.strip()] = text
    return stats


class KamailioRpc:
    """JSON-RPC client for one Kamailio, sharing the caller's aiohttp session."""

    def __init__(self, session: aiohttp.ClientSession, url: str, *, timeout: float = 5.0) -> None:
        self._session = session
        self._url = url
        self._timeout = aiohttp.ClientTimeout(total=timeout)

    @property
    def url(self) -> str:
        return self._url

    async def call(self, method: str, *params: JsonValue) -> Any:
        """Call `method` with positional `params`; return the result or raise."""
        payload = request(method, params=tuple(params)) if params else request(method)
        try:
            async with self._session.post(
                self._url, json=payload, timeout=self._timeout
            ) as response:
                # jsonrpcs mirrors an error's code in the HTTP status (500 for an unknown
                # method), so the body decides; a non-JSON body with a bad status means
                # we did not reach jsonrpcs at all (wrong port, wrong path).
                text = await response.text()
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise KamailioUnreachable(method, f"{type(exc).__name__}: {exc}") from exc
        try:
            body = json.loads(text)
        except ValueError as exc:
            if status != 200:
                raise KamailioUnreachable(method, f"HTTP {status}: {text[:200]}", status) from exc
            raise KamailioRpcError(method, f"invalid JSON answer: {text[:200]!r}") from exc
        if not isinstance(body, dict) or not ({"result", "error"} & body.keys()):
            raise KamailioRpcError(method, f"not a JSON-RPC response: {body!r:.200}")
        try:
            parsed = parse(body)
        except (KeyError, TypeError) as exc:
            raise KamailioRpcError(method, f"malformed JSON-RPC response: {body!r:.200}") from exc
        if isinstance(parsed, Error):
            raise KamailioRpcError(method, str(parsed.message), int(parsed.code))
        if isinstance(parsed, Ok):
            return parsed.result
        raise KamailioRpcError(method, "batch answer to a single request")

    async def version(self) -> str:
        """`core.version`: e.g. "kamailio 5.6.3 (x86_64/linux)"."""
        return str(await self.call("core.version")).strip()

    async def dispatcher_list(self) -> list[DispatcherTarget]:
        """Every destination of every set; [] when Kamailio has no set at all."""
        try:
            result = await self.call("dispatcher.list")
        except KamailioUnreachable:
            raise
        except KamailioRpcError as exc:
            # "No Destination Sets": 404 from some versions, 500 from 5.6 with an empty list
            if exc.code in (404, 500) and "destination sets" in exc.message.lower():
                return []
            raise
        return parse_dispatcher_list(result)

    async def dispatcher_set_state(
        self, state: DispatcherState | str, setid: int, uri: str
    ) -> None:
        """Mark `uri` of set `setid` active, inactive, disabled or trying."""
        await self.call("dispatcher.set_state", str(state), setid, uri)

    async def dispatcher_add(
        self,
        setid: int,
        uri: str,
        flags: int = 0,
        priority: int = 0,
        attrs: str = "",
    ) -> None:
        """Add a destination in memory (lost on `dispatcher.reload` or restart)."""
        await self.call("dispatcher.add", setid, uri, flags, priority, attrs)

    async def dispatcher_remove(self, setid: int, uri: str) -> None:
        """Remove a destination from memory."""
        await self.call("dispatcher.remove", setid, uri)

    async def dispatcher_reload(self) -> None:
        """Re-read the dispatcher list file."""
        await self.call("dispatcher.reload")

    async def statistics(self, group: str = "all") -> dict[str, int | str]:
        """Counters of one group (`"tmx"`, `"core"`, `"dispatcher"`, ...) or `"all"`.

        A bare group name gets the trailing colon Kamailio needs to match the whole group;
        a full name such as `"tmx:UAS_transactions"` asks for that one counter.
        """
        name = group if group == "all" or ":" in group else f"{group}:"
        return parse_statistics(await self.call("stats.get_statistics", name))

    async def htable_get(self, table: str, key: str) -> str | int | None:
        """One item's value; None when the key is not set (Kamailio answers 500 or 404)."""
        try:
            result = await self.call("htable.get", table, key)
        except KamailioUnreachable:
            raise
        except KamailioRpcError as exc:
            # "Key name doesn't exist in htable." (500); not "Method Not Found" (500 too)
            if exc.code in (404, 500) and "key" in exc.message.lower():
                return None
            raise
        item = result.get("item") if isinstance(result, dict) else None
        if not isinstance(item, dict):
            raise KamailioRpcError("htable.get", f"unexpected result {result!r:.200}")
        value = item.get("value")
        return value if isinstance(value, int) else str(value)

    async def htable_set(self, table: str, key: str, value: str, expire: int | None = None) -> None:
        """Set a string item; with `expire` (seconds) it expires on its own (`htable.setxs`)."""
        if expire is None:
            await self.call("htable.sets", table, key, value)
        else:
            await self.call("htable.setxs", table, key, value, int(expire))

    async def htable_delete(self, table: str, key: str) -> bool:
        """Delete an item; False when it was not there (Kamailio's 404)."""
        try:
            await self.call("htable.delete", table, key)
        except KamailioUnreachable:
            raise
        except KamailioRpcError as exc:
            if exc.code == 404:
                return False
            raise
        return True

    async def htable_dump(self, table: str) -> dict[str, str | int]:
        """Every item of a table (key -> value)."""
        return parse_htable_dump(await self.call("htable.dump", table))
