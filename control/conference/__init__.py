"""Conference rooms: participants and their streams, chat (public, private, nicknames,
history, SIP MESSAGE), files (RFC 5547 push and pull by hash), screen sharing; later
conference-info and REFER."""

from control.conference.app import ConferenceApp, ConferenceLimits
from control.conference.chat import ChatLimits
from control.conference.room import RoomObserver
from control.conference.roomchat import HistoryPolicy

__all__ = ["ChatLimits", "ConferenceApp", "ConferenceLimits", "HistoryPolicy", "RoomObserver"]
