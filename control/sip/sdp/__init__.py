"""SDP (RFC 8866) and RFC 3264 offer/answer.

``model`` holds the description model, ``wire`` its parser and serializer; ``offeranswer`` the
answering, offering and per-dialog origin logic. Callers use the package:
``from control.sip import sdp``.
"""

from control.sip.sdp.model import *  # noqa: F403
from control.sip.sdp.model import __all__ as _model_all
from control.sip.sdp.offeranswer import *  # noqa: F403
from control.sip.sdp.offeranswer import __all__ as _offeranswer_all
from control.sip.sdp.wire import *  # noqa: F403
from control.sip.sdp.wire import __all__ as _wire_all

__all__ = [*_model_all, *_wire_all, *_offeranswer_all]
