"""Errors about a silo as a whole, that the orchestrator treats alike wherever the silo runs."""

from __future__ import annotations


class SiloUnavailable(RuntimeError):
    """The silo cannot answer: its process, node or site is gone, or its site's policy refuses.
    Another silo can do what it was asked to (publish the model, say)."""
