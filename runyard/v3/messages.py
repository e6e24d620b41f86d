"""Messages of the hosted service's error table and answers, copied exactly.

Clients match on these texts (`reference/v3-api-facts.md`); a refusal carries
one of them in a `V3Error` (runyard/exceptions.py) with its HTTP status.
"""

from __future__ import annotations

TASK_NOT_FOUND = "Task not found, please check the name and try again."
INVALID_KEY = "Invalid key"
QUOTA_EXCEEDED = "Quota exceeded"
RATE_LIMITED = "Rate limit exceeded. Try again in a few seconds."
MISSING_NAME = "Missing task name, you must send the name of the task that you wish to trigger."
# The queued answer keeps the hosted service's text: clients match on it.
QUEUED_MESSAGE = (
    "Axiom could not start due to a lack of available resources. "
    "The task has been queued and will retry in five minutes."
)
NO_RUNS = "This automation has no runs yet."
RUN_NOT_FOUND = "Run not found: pid and pw do not match a run."
LINK_KEY = "OPEN LINK IN BROWSER"
# Not the hosted service's (it has one machine): the run's output or process is
# on a node of the cluster that does not answer now.
NODE_UNREACHABLE = "The machine running this run does not answer; try again in a few seconds."
