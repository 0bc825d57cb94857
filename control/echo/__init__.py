"""The echo application: audio played back to the caller, messages sent back."""

from control.echo.app import EchoApp

__all__ = ["EchoApp"]
