"""Conference rooms: participants, streams, and (later) chat, files, conference-info, REFER."""

from control.conference.app import ConferenceApp, ConferenceLimits
from control.conference.room import RoomObserver

__all__ = ["ConferenceApp", "ConferenceLimits", "RoomObserver"]
