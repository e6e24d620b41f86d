"""Bytes of input data held by waiting runs, per task and per account (`max_queued_input`)."""

from __future__ import annotations

from collections import defaultdict

from runyard.domain.models import Run, TaskDefinition


class QueuedInput:
    """The input bytes of the runs admitted and not started yet (queued or waiting a retry delay).

    A run is added once, when it starts waiting, and removed once, when it
    stops waiting (started, stopped, skipped, or the daemon stops): both
    totals change in the same call, so they cannot drift apart.
    """

    def __init__(self) -> None:
        self._per_task: defaultdict[str, int] = defaultdict(int)
        self._per_account: defaultdict[str, int] = defaultdict(int)

    def add(self, run: Run) -> None:
        """Count a run that starts waiting."""
        self._change(run, 1)

    def remove(self, run: Run) -> None:
        """Stop counting a run that no longer waits."""
        self._change(run, -1)

    def clear(self) -> None:
        self._per_task.clear()
        self._per_account.clear()

    def of_task(self, task_name: str) -> int:
        return self._per_task.get(task_name, 0)

    def of_account(self, account: str) -> int:
        return self._per_account.get(account, 0)

    def refusal(
        self,
        task: TaskDefinition,
        account: str | None,
        account_limit: int | None,
        size: int,
    ) -> str | None:
        """Return why `size` more bytes may not wait, or None when they may."""
        queued = self.of_task(task.name)
        if queued + size > task.max_queued_input:
            return (
                f"Input data queued for task {task.name!r} would reach {queued + size} bytes, "
                f"over its max_queued_input of {task.max_queued_input} bytes "
                f"({queued} bytes already wait). Try again once queued runs have started."
            )
        if account is not None and account_limit is not None:
            queued = self.of_account(account)
            if queued + size > account_limit:
                return (
                    f"Input data queued for account {account!r} would reach {queued + size} "
                    f"bytes, over its max_queued_input of {account_limit} bytes "
                    f"({queued} bytes already wait). Try again once queued runs have started."
                )
        return None

    def _change(self, run: Run, sign: int) -> None:
        if not run.input_size:
            return
        self._per_task[run.task_name] += sign * run.input_size
        if run.account is not None:
            self._per_account[run.account] += sign * run.input_size
