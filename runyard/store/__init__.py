"""Run history storage: the only package that knows SQL."""

from __future__ import annotations

from runyard.store.database import database_url
from runyard.store.runs import RunStore
from runyard.store.task_state import TaskState

__all__ = ["RunStore", "TaskState", "database_url"]
