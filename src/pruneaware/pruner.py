"""The Pruner, the front door of the library; it lives in ``pruneaware.core.driver`` and is importable from here."""

from pruneaware.core.driver import STATE_FORMAT, Pruner

__all__ = ["STATE_FORMAT", "Pruner"]
