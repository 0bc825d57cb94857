"""Files kept on disk: the spool where uploaded files land (RFC 5547 transfers) and survive a
restart (DESIGN.md, "Nothing lost")."""

from .spool import FileMeta, FileSpool, SpoolError, StoredFile, Upload, to_disk

__all__ = ["FileMeta", "FileSpool", "SpoolError", "StoredFile", "Upload", "to_disk"]
