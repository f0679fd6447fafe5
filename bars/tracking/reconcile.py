"""Reconcile: end the runs left RUNNING by dead processes. Part of :mod:`bars.tracking`."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Mapping

from bars.process import process_alive
from bars.tracking.runs import Tracker, end_run


def _default_is_alive(tags: Mapping[str, str]) -> bool | None:
    """True/False for runs started on this host; None (unknown) for other hosts or runs without a pid tag."""
    if tags.get("hostname") != socket.gethostname():
        return None
    try:
        pid = int(tags["pid"])
    except (KeyError, ValueError):
        return None
    return process_alive(pid, tags.get("pid_start"))


def reconcile(uri: str | None, experiment: str | None = None, *,
              is_alive: Callable[[Mapping[str, str]], bool | None] | None = None,
              status: str = "FAILED") -> list[str]:
    """End every RUNNING run whose owning process is dead; returns their run ids.

    ``is_alive(tags) -> True | False | None`` decides (None = cannot tell, leave it). The default checks the
    ``hostname``/``pid``/``pid_start`` tags against this machine's processes, so only runs started on this host
    are judged. ``experiment=None`` scans every experiment. A run is ended only if it is still RUNNING when read
    again after its process was judged dead (concurrent commands: one that finished and exited meanwhile keeps
    its FINISHED).
    """
    tracker = Tracker(uri, experiment or "Default")
    client = tracker.client
    if experiment is None:
        exp_ids = [e.experiment_id for e in client.search_experiments()]
    else:
        exp = client.get_experiment_by_name(experiment)
        exp_ids = [exp.experiment_id] if exp is not None else []
    if not exp_ids:
        return []
    judge = is_alive or _default_is_alive
    ended: list[str] = []
    page_token = None
    while True:
        page = client.search_runs(exp_ids, filter_string="attributes.status = 'RUNNING'", max_results=1000,
                                  page_token=page_token)
        for r in page:
            alive = judge(dict(r.data.tags))
            # The page is a snapshot: a process that ended its run FINISHED and exited between the search and the
            # judgement looks dead with a RUNNING run. Its status is read again only now that its process is known
            # dead (a dead process writes nothing more), so a finished run is never overwritten FAILED.
            if alive is False and client.get_run(r.info.run_id).info.status == "RUNNING":
                end_run(r.info.run_id, status, {
                    "error": f"reconciled: owning process {r.data.tags.get('hostname')}:"
                             f"{r.data.tags.get('pid')} is gone",
                    "error_type": "ProcessDied",
                    "reconciled_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                }, tracker=tracker)
                ended.append(r.info.run_id)
        page_token = page.token
        if not page_token:
            break
    return ended
