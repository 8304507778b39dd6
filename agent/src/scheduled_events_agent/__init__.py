"""In-VM agent for Azure Scheduled Events: hooks per event type, early approval, forwarding."""

from __future__ import annotations

__version__ = "0.1.0"
