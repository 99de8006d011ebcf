"""The fire-and-forget API GUI code calls; registration; optional spawning of a writer."""

from .api import Client, ClientStats, TaskRun, WorkflowRun

__all__ = ["Client", "ClientStats", "TaskRun", "WorkflowRun"]
