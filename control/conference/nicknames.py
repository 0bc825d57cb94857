"""Nicknames in a chat room (RFC 7701 §6): unique per room, compared case-insensitively.

A nickname belongs to an identity (the participant's SIP URI): the same person's sessions on
two devices may share one, anyone else asking for it gets 425. A malformed one (empty, only
spaces, control characters, longer than :data:`MAX_NICKNAME`) gets 424.
"""

from __future__ import annotations

import unicodedata

from control.msrp.errors import MsrpError

__all__ = ["MAX_NICKNAME", "NicknameBook", "check_nickname", "fold"]

MAX_NICKNAME = 64  # characters: a display name, not a document


def fold(nickname: str) -> str:
    """The comparison form: NFKC, case-folded, outer spaces stripped."""
    return unicodedata.normalize("NFKC", nickname).casefold().strip()


def check_nickname(nickname: str | None) -> str:
    """The nickname to use, or MsrpError 424 (RFC 7701 §6.1: malformed nickname)."""
    if nickname is None:
        raise MsrpError(424, "no usable Use-Nickname")
    text = nickname.strip()
    if not text:
        raise MsrpError(424, "empty nickname")
    if len(text) > MAX_NICKNAME:
        raise MsrpError(424, f"nickname longer than {MAX_NICKNAME} characters")
    if any(unicodedata.category(c).startswith("C") for c in text):
        raise MsrpError(424, "control or unassigned character in nickname")
    return text


class NicknameBook:
    """Which identity holds which nickname in one room."""

    def __init__(self) -> None:
        self._holders: dict[str, str] = {}  # folded nickname -> identity key

    def claim(self, identity: str, nickname: str, previous: str | None) -> None:
        """Give ``nickname`` to ``identity`` (dropping ``previous``); 425 when another holds it."""
        key = fold(nickname)
        holder = self._holders.get(key)
        if holder is not None and holder != identity:
            raise MsrpError(425, "nickname already in use in this room")
        if previous is not None and fold(previous) != key:
            self.release(identity, previous)
        self._holders[key] = identity

    def release(self, identity: str, nickname: str) -> None:
        key = fold(nickname)
        if self._holders.get(key) == identity:
            del self._holders[key]

    def holder(self, nickname: str) -> str | None:
        return self._holders.get(fold(nickname))
