"""The store's error, apart so that every store module can raise it."""

from __future__ import annotations


class StoreError(Exception):
    """The database cannot be used: corrupt, unreadable, locked, or from a newer version."""
