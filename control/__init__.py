"""Chorus: a SIP conference application server (the RFC 4353 focus), XMPP gateway and echo."""

import importlib.metadata

__all__ = ["__version__", "package_version"]

__version__ = "0.1.0"  # the one place it is written: pyproject.toml reads it (dynamic)


def package_version() -> str:
    """The installed distribution's version (its metadata: what ``pip`` installed), else the
    source tree's when Chorus runs from a checkout that was never installed."""
    try:
        return importlib.metadata.version("chorus")
    except importlib.metadata.PackageNotFoundError:
        return __version__
