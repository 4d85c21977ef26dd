"""The end of an execution: compose its result from every task's day copies, write `summary.json`, and
delete the execution's scratch. Whichever task sees every task of the execution finished composes; the
writes are create-only or replace-by-generation (`app.output.write_conditionally`), so exactly one wins.
"""

from __future__ import annotations

import gzip
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from app import summary as summary_mod
from app.config import Settings
from app.errors import AlreadyExists, StorageError
from app.outcome import Outcome, Status, StopReason, UnitState, decide
from app.output import put_json, read_json, write_conditionally
from app.resources import ResourceMonitor
from app.sinks import ObjectInfo, Sink, is_compose_scratch
from app.store import RunLayout


@dataclass
class RunResult:
    """An execution's result and summary, as one task finishes (see the module docstring)."""

    settings: Settings
    sink: Sink
    layout: RunLayout
    run_id: str
    currency: str
    monitor: ResourceMonitor
    log: Any
    clock: Callable[[], float]
    started: float
    plan: Callable[[], list[tuple[str, str]]]
    """Every (account, date) of the run, in the result's order."""

    def compose_if_last(self) -> dict[str, Any] | None:
        """If every task of this execution has finished, compose the result and write the summary.

        Several tasks may get here at once; create-only writes let exactly one of them win.
        """
        settings = self.settings
        tasks: list[dict[str, Any]] = []
        for index in range(settings.task.count):
            task = read_json(self.sink, self.layout.task_summary(index))
            if (task is None or task.get("task_count") != settings.task.count
                    or task.get("status") == Status.FAILED):
                return None
            tasks.append(task)
        by_unit: dict[tuple[str, str], str] = {}
        states: list[UnitState] = []
        for task in tasks:
            for unit in task.get("unit_reports", []):
                states.append(UnitState(unit["state"]))
                if unit.get("object"):
                    by_unit[(unit["account"], unit["date"])] = unit["object"]
        sources = [by_unit[key] for key in self.plan() if key in by_unit]
        reasons = {StopReason(t["stop_reason"]) for t in tasks if t.get("stop_reason")}
        outcome = decide(states, StopReason.MAX_RECORDS if StopReason.MAX_RECORDS in reasons
                         else None, None, fail_on_skipped=settings.fail_on_skipped_pages)
        previous = read_json(self.sink, self.layout.summary)
        if previous is not None and previous.get("status") == Status.SUCCEEDED:
            return previous
        try:
            result = self._compose(sources)
        except StorageError:
            # Another task of this execution got here at the same time, composed the result,
            # wrote the summary and swept the day copies this compose was reading.
            written = read_json(self.sink, self.layout.summary)
            if written is None:
                raise
            self.log.info("result_composed_elsewhere", object=self.layout.result)
            return written
        return self.write_run_summary(outcome, tasks, result)

    def _compose(self, sources: list[str]) -> ObjectInfo:
        """Compose the execution's result, create-only: the very same compose by a concurrent
        task is recognised as done (the sink's compose marker); a different result left by an
        earlier attempt (a partial one) is replaced by generation."""
        info = write_conditionally(
            self.sink, self.layout.result,
            lambda generation: self._write_result(sources, if_generation_match=generation),
            replace_if=lambda _existing: True)
        self.log.info("result_composed", object=info.uri, bytes=info.size, parts=len(sources))
        return info

    def _write_result(self, sources: list[str], *, if_generation_match: int) -> ObjectInfo:
        if sources:
            return self.sink.compose(self.layout.result, sources,
                                     if_generation_match=if_generation_match)
        return self.sink.put_bytes(self.layout.result, gzip.compress(b""),
                                   content_type="application/gzip",
                                   if_generation_match=if_generation_match)

    def sweep_scratch(self, *, own_only: bool = False) -> None:
        """After the result: delete this execution's scratch (the day copies it composed, chunks
        of units never finished, intermediates of composes cut short, also those of earlier
        attempts killed outright). Nothing else of the execution is being written now (this is
        the last task). After a failed attempt of one task of several, `own_only`: only this
        attempt's day copies and chunks. Best effort."""
        try:
            leftovers = [o.name for o in self.sink.list(self.layout.prefix)
                         if (o.name.startswith(self.layout.scratch_prefixes)
                             or is_compose_scratch(o.name))
                         and (not own_only or self._own_scratch(o.name))]
            for name in leftovers:
                self.sink.delete(name)
        except StorageError as exc:
            self.log.warning("cleanup_failed", error=str(exc))
            return
        if leftovers:
            self.log.info("scratch_deleted", objects=len(leftovers))

    def _own_scratch(self, name: str) -> bool:
        """Whether `name` is a day copy or chunk of this attempt (named after its run id)."""
        return (name.startswith(self.layout.scratch_prefixes)
                and name.rsplit("/", 1)[-1].startswith((f"{self.run_id}.", f"{self.run_id}-")))

    def write_run_summary(self, outcome: Outcome, tasks: list[dict[str, Any]],
                           result: ObjectInfo | None) -> dict[str, Any]:
        resources = self.monitor.snapshot() if self.settings.resource_monitor_enabled else {}
        # This task's storage retries since its task summary (reading, composing) count too.
        storage = self.sink.health.retries
        tasks = [{**task, "retries": {**(task.get("retries") or {}), "storage": storage}}
                 if storage and task.get("task_index") == self.settings.task.index else task
                 for task in tasks]
        run_summary = summary_mod.run_summary(
            outcome, tasks, result, settings=self.settings, currency=self.currency,
            duration=self.clock() - self.started, resources=resources)
        try:
            info = put_json(self.sink, self.layout.summary, run_summary,
                            replace_if=lambda old: old.get("status") != Status.SUCCEEDED)
        except AlreadyExists:
            self.log.info("summary_written_elsewhere", object=self.layout.summary)
            return run_summary
        self.log.info("summary_written", object=info.uri, status=outcome.status.value)
        if result is not None:
            # Only now: a task composing beside this one may still read the day copies, and
            # finds this summary when they are gone.
            self.sweep_scratch()
        return run_summary
