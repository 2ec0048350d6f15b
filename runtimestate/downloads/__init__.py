"""The download worker: claims queued pulls and runs them, persisting and publishing progress.

The package is the worker (`Downloads`, from `worker`); `recorder` does every write the worker
makes (committed, then published) and classifies failures; `metering` turns Ollama's per-blob
progress lines into one job's progress, rate and ETA.

Called by `runtimestate.state` (the download cycle) and by the controller's reaper. Reads the
adapters and the queue; never the planner or the resolver.
"""

from runtimestate.downloads.recorder import EventSink, classify
from runtimestate.downloads.worker import CycleReport, Downloads, Settings

__all__ = [
    "CycleReport",
    "Downloads",
    "EventSink",
    "Settings",
    "classify",
]
