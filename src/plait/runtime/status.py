"""One vocabulary of statuses: the same words in `-o json`, `plait show`, the
run records, the progress display and the timeline.

A run:
  success      every node that ran succeeded, every batch item too
  partial      the run finished, but items of a `continue` batch failed
               (exit 0, or 1 with `--strict` / `"fail_on_item_errors": true`)
  failed       a node failed and nothing handled it (exit 1)
  interrupted  Ctrl-C or SIGTERM stopped it (exit 130)
  budget       its budget (`"budget": {"usd": N}`) could not pay for the next call:
               in-flight calls finished, the rest did not start; `plait resume` goes on
  running      still going (records only)
  died         its process is gone without an ending (kill -9): the record is
               true up to its writer's last commit

A node: success, partial, failed, interrupted, budget, not_run, running, died.

An attempt at an item (records, timeline): success, failed (its final
attempt), retried (an attempt followed by another), throttled (a rate-limit
answer, retried apart from max_retries), interrupted (running when the run was
stopped), cancelled (waiting for a retry when its batch stopped, or not launched
for the budget).
"""

from __future__ import annotations

SUCCESS = "success"
PARTIAL = "partial"
FAILED = "failed"
INTERRUPTED = "interrupted"
NOT_RUN = "not_run"
RUNNING = "running"
DIED = "died"
BUDGET = "budget"

RUN_STATUSES = (SUCCESS, PARTIAL, FAILED, INTERRUPTED, BUDGET, RUNNING, DIED)
NODE_STATUSES = (SUCCESS, PARTIAL, FAILED, INTERRUPTED, BUDGET, NOT_RUN, RUNNING, DIED)
ITEM_STATUSES = ("success", "failed", "retried", "throttled", "interrupted", "cancelled")
#: statuses a finished run can end with that count as having completed
COMPLETED = (SUCCESS, PARTIAL)


def shown(status: str) -> str:
    """A status as people read it (`not_run` → `not run`)."""
    return status.replace("_", " ")
