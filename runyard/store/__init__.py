"""Run history storage: the only package that knows SQL."""

from __future__ import annotations

from runyard.store.database import database_url
from runyard.store.runs import RunStore

__all__ = ["RunStore", "database_url"]
