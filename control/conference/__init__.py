"""Conference rooms: participants, streams, and (later) chat, files, conference-info, REFER."""

from control.conference.app import ConferenceApp, ConferenceLimits

__all__ = ["ConferenceApp", "ConferenceLimits"]
