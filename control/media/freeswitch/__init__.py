"""The FreeSWITCH audio engine: mod_conference nodes mix, Chorus signals and controls.

``esl`` is the Event Socket wire format (sans-IO), ``eslclient`` one node's connection
(greenswitch in its own thread), ``members`` conference events → AudioEvents (sans-IO),
``leg`` the SIP leg toward a node, ``pool`` room affinity and node health, ``engine`` the
`AudioEngine` over all of them.
"""

from control.media.freeswitch.engine import FreeSwitchEngine
from control.media.freeswitch.members import ConferenceMembers, conference_name

__all__ = ["ConferenceMembers", "FreeSwitchEngine", "conference_name"]
