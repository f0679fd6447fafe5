"""The tracking helper (issue 16): a ``bars train`` process's MLflow writes made by a child process, so that the
run's own process never imports mlflow.

Importing mlflow (its package pulls pandas and its GenAI modules) and opening a SQLAlchemy store costs a process
2-3 s of CPU before its first record; a ``bars train`` process paid it on its critical path. With the helper, the
run's process starts it first thing: the helper imports :mod:`bars.tracking` and the store's modules, then (once the
config is known) does the store's housekeeping (spools sent, runs of dead processes ended) and opens the store and
the experiment, on the other core, while the run's process imports torch, composes its config, loads the data and
builds the model. The run then talks to it over a pipe (length-prefixed pickles, in order).

``tracking.helper``: ``auto`` (the default) uses the helper in a ``bars train`` process of a plain run, whose first
step starts it (:func:`prestart`, before the config is even composed); sweeps, finals and a method's runs hold
mlflow for their parent runs anyway and write in process, as do direct calls of ``train_one``. ``true``: every
run uses one (started when the run starts); ``false``: none.

The semantics are :class:`bars.tracking.Tracker`'s and ``TrackedRun``'s (the helper runs exactly those, every
request in order, each to completion):

- Opening the run waits for the helper's answer: a store that cannot create the run fails the run before any
  training (:class:`TrackingError`, naming the store's error).
- Writes made with ``wait=False`` return at once; waited writes, artifacts and the run's end return when the
  helper has done them (and everything sent before them).
- The :class:`TrackingWarning` a helper's call raised is raised again in the run's process (from the reader thread
  for writes nobody waits for, as ``TrackedRun``'s writer thread does); spool messages go to stderr as before.
- A helper that cannot start, or exits: the run's process opens the store itself and repeats every request the
  helper had not confirmed, in order (a line on stderr says so): nothing is lost.
- The helper ignores SIGINT and SIGTERM (Ctrl-C or a job runner's SIGTERM ends the run KILLED through the run's
  process) and exits at the end of its input, after the requests sent before it. A run's process killed by SIGKILL leaves its run RUNNING with its own
  pid tag, as without the helper, and ``reconcile`` ends it.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import pickle
import struct
import subprocess
import sys
import threading
import traceback
import warnings
from collections.abc import Iterator, Mapping
from concurrent.futures import Future
from pathlib import Path
from typing import Any

_HEADER = struct.Struct("<Q")
MAX_TAG_VALUE = 8000  # bars.tracking.store's limit (an error tag's length)


class TrackingWarning(UserWarning):
    """A tracking call failed after its retries; the run goes on without that record."""


class TrackingError(RuntimeError):
    """The tracking helper could not do what the run asked (e.g. create its run): the store's error type and
    message."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(f"{error_type}: {message}")
        self.error_type = error_type


class HelperGone(RuntimeError):
    """The helper exited or does not take requests: the run's process writes itself."""


# ------------------------------------------------------------------------------------------ text of artifacts


def redacted(data: Any) -> Any:
    """``data`` with the password of every URL in its strings removed (``bars.config.redact``), recursively."""
    from bars.config import redact

    if isinstance(data, dict):
        return {k: redacted(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [redacted(v) for v in data]
    return redact(data)


def dict_text(data: Any, name: str) -> str:
    """The text MLflow's ``log_dict`` writes for ``data`` under ``name`` (YAML for .yaml/.yml, else JSON), after
    the same redaction as ``TrackedRun.log_dict``: the same bytes, for ``TrackedRun.log_files``."""
    from bars.config import to_container

    data = redacted(to_container(data))
    if name.endswith((".yaml", ".yml")):
        import yaml

        # libyaml's emitter when present: the same text for a config's plain values (tested), 4 ms instead of
        # 18 ms a run (issue 16)
        return yaml.dump(data, Dumper=getattr(yaml, "CDumper", yaml.Dumper), indent=2, default_flow_style=False)
    return json.dumps(data, indent=2, default=str)


# ----------------------------------------------------------------------------------------------- options


def options_of(cfg: Any) -> dict[str, Any]:
    """The tracker's options of a composed config (what ``bars.tracking.tracker_of`` reads)."""
    t = cfg.tracking
    spool = t.get("spool_dir")
    return {"uri": str(t.uri), "experiment": str(t.experiment), "tries": int(t.get("tries") or 5),
            "first_delay": float(t.get("retry_wait", 2.0)), "spool_dir": None if spool is None else str(spool)}


def wanted(cfg: Any) -> bool:
    """Whether a run of ``cfg`` writes through the helper (``tracking.helper``: auto | true | false)."""
    mode = cfg.tracking.get("helper", "auto")
    if isinstance(mode, bool):
        return mode
    return os.getpid() in _PRESTARTED  # auto: in a `bars train` process (prestart), not in sweeps, finals, tests


# ------------------------------------------------------------------------------------------------ the helper


def serve() -> int:
    """The helper's loop (``python -c ... serve``): it imports :mod:`bars.tracking` and the SQLAlchemy store's
    modules first, then reads requests ``(seq, op, args)`` from stdin, the first one ``configure`` (the tracker's
    options, and the command whose store housekeeping it does), and writes one reply
    ``(seq, ok, result, warnings, notes)`` per request on stdout, in order, until the end of its input."""
    import signal

    # Ctrl-C or a job runner's SIGTERM to the process group stops the run's process, which ends its run KILLED
    # through this helper; the helper itself ends at the end of its input (also when the run's process dies)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    fin, fout = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # whatever MLflow or bars prints reaches the terminal, never the replies
    state: dict[str, Any] = {"tracker": None, "error": None}
    runs: dict[str, Any] = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            from bars.startup import collector_paused

            with collector_paused():  # ~340k objects imported: no collector passes over them (bars.startup)
                import mlflow.store.tracking.sqlalchemy_store  # noqa: F401 - what opening a database store imports, ~1 s

                import bars.tracking  # noqa: F401 - mlflow, ~1 s
        except Exception as exc:  # noqa: BLE001 - told to the run when it opens
            state["error"] = exc
    pending_warnings = list(caught)

    def configure(opts: dict[str, Any], house: str | None) -> list[tuple[str, str]]:
        notes: list[tuple[str, str]] = []  # (stream, line): housekeeping's messages, printed by the run's process
        if state["error"] is not None:
            return notes
        try:
            from bars.tracking import Tracker, reconcile, sync_spools

            if house:
                try:
                    sync_spools(opts["uri"], opts["spool_dir"],
                                say=lambda m: notes.append(("err", f"bars {house}: {m}")))
                    ended = reconcile(opts["uri"], opts["experiment"])
                    if ended:
                        line = f"bars {house}: marked {len(ended)} run(s) of dead processes FAILED: {', '.join(ended)}"
                        notes.append(("out", line))
                except Exception as exc:  # noqa: BLE001 - housekeeping never blocks a run
                    line = f"bars {house}: could not reconcile stale runs: {type(exc).__name__}: {exc}"
                    notes.append(("err", line))
            state["tracker"] = tracker = Tracker(**opts)
            tracker.experiment_id(create=True)  # retried; its error is the run's start error
        except Exception as exc:  # noqa: BLE001 - told to the run when it opens
            state["error"] = exc
        return notes

    def do(op: str, args: dict[str, Any]) -> Any:
        if op == "configure":
            return configure(args["opts"], args["housekeeping"])
        if op == "flush":
            return None
        if op == "probe":  # what tests check: this process and whether it holds torch (it never should)
            return {"pid": os.getpid(), "torch": "torch" in sys.modules}
        if state["error"] is not None:
            raise state["error"]
        tracker = state["tracker"]
        if tracker is None:
            raise RuntimeError("bars.tracking_helper: a request came before configure")
        if op == "start":
            run = tracker.start_run(args["name"], args["tags"], args["params"], args["parent_run_id"],
                                    description=args.get("description"), environment=args.get("environment"))
            run.flush()  # its params, here, so that their warnings come with this reply
            runs[run.run_id] = run
            return run.run_id, run.name, run.artifact_uri, tracker.uri
        run = runs.get(args["rid"])
        if run is None:
            from bars.tracking import TrackedRun

            run = runs[args["rid"]] = TrackedRun(tracker, args["rid"], artifact_uri=args.get("artifact_uri"))
        return apply(run, op, args)

    while True:
        head = fin.read(_HEADER.size)
        if len(head) < _HEADER.size:  # the end: every request was done (and its reply written) in order
            for run in runs.values():
                run.flush()
            sys.stderr.flush()
            os._exit(0)  # not the interpreter's teardown of mlflow's modules and threads (1-1.5 s of CPU)
        seq, op, args = pickle.loads(fin.read(_HEADER.unpack(head)[0]))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                result, ok = do(op, args), True
            except Exception as exc:  # noqa: BLE001 - the run's process raises it
                result, ok = (type(exc).__name__, str(exc)), False
        got = pending_warnings + list(caught)
        pending_warnings = []
        relay = [str(w.message) for w in got if issubclass(w.category, TrackingWarning)]
        for w in got:  # any other warning (MLflow's own) goes to this process's filters (the terminal)
            if not issubclass(w.category, TrackingWarning):
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        reply = pickle.dumps((seq, ok, result, relay), protocol=pickle.HIGHEST_PROTOCOL)
        fout.write(_HEADER.pack(len(reply)) + reply)
        fout.flush()


def apply(run: Any, op: str, args: dict[str, Any]) -> Any:
    """Do one write request on a ``TrackedRun`` (in the helper, or in the run's process once it took over)."""
    if op == "log":
        return run.log(args["metrics"], args["step"], params=args["params"], tags=args["tags"], wait=True)
    if op == "files":
        return run.log_files(args["files"])
    if op == "artifact":
        return run.log_artifact(args["path"], args["artifact_path"])
    if op == "text":
        return run.log_text(args["text"], args["name"])
    if op == "dict":
        return run.log_dict(args["data"], args["name"])
    if op == "end":
        run.end(args["status"], args["tags"])
        return run.status
    if op == "flush":
        return run.flush()
    raise ValueError(f"bars.tracking_helper: unknown request {op!r}")


def plain(value: Any) -> Any:
    """``value`` made of builtins only, so that unpickling it in the helper imports nothing: mappings and sequences
    recursively, ``str`` subclasses (``torch.__version__`` is a ``TorchVersion``) as ``str``, numbers of other
    libraries (numpy, 0-d tensors) as ``float``/``int``, paths kept, anything else as its ``str``."""
    if value is None or type(value) in (str, int, float, bool, bytes) or isinstance(value, Path):
        return value
    if isinstance(value, Mapping):
        return {plain(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, str):
        return str(value)
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int(value)
    if hasattr(value, "item") and callable(value.item):  # numpy scalars, one-element tensors
        try:
            return plain(value.item())
        except (TypeError, ValueError, RuntimeError):
            pass
    if isinstance(value, float):
        return float(value)
    return str(value)


# ------------------------------------------------------------------------------------------------ the client


class Helper:
    """The run's side: one helper process per process and set of tracker options (:func:`start`)."""

    def __init__(self) -> None:
        self.opts: dict[str, Any] | None = None  # set by configure
        self.pid = os.getpid()
        self._lock = threading.Lock()
        self._seq = 0
        self._pending: dict[int, tuple[Future[Any], bool, str]] = {}  # seq -> (future, waited, op)
        self._unconfirmed: dict[int, tuple[str, dict[str, Any]]] = {}  # seq -> request, until its reply
        self.notes: list[tuple[str, str]] = []
        self.gone: str | None = None
        root = str(Path(__file__).resolve().parent.parent)  # the folder holding the bars package
        code = ("import sys; sys.path.insert(0, sys.argv[1]); from bars.tracking_helper import serve; "
                "sys.exit(serve())")
        self._proc = subprocess.Popen([sys.executable, "-c", code, root], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, close_fds=True)
        self._reader = threading.Thread(target=self._read_loop, name="bars-tracking-helper", daemon=True)
        self._reader.start()

    def configure(self, opts: dict[str, Any], housekeeping: str | None = None) -> None:
        """The tracker's options (``options_of``); with ``housekeeping`` (the command's name) the helper first
        sends kept spools and ends the runs of dead processes. Not waited for: the run's opening waits."""
        self.opts = dict(opts)
        self.call("configure", {"opts": self.opts, "housekeeping": housekeeping}, wait=False)

    # -- requests -------------------------------------------------------------------------------------------
    def call(self, op: str, args: dict[str, Any], wait: bool = True) -> Any:
        """Send one request; with ``wait`` return its result (raising its error), else return at once.
        Raises :class:`HelperGone` when the helper is not there to take or answer it."""
        fut: Future[Any] = Future()
        with self._lock:
            seq = self._seq
            self._seq += 1
            body = pickle.dumps((seq, op, args), protocol=pickle.HIGHEST_PROTOCOL)
            self._unconfirmed[seq] = (op, args)  # also when the helper is gone: the run's take-over repeats it
            if self.gone is not None:
                raise HelperGone(self.gone)
            self._pending[seq] = (fut, wait, op)
            try:
                self._proc.stdin.write(_HEADER.pack(len(body)) + body)  # type: ignore[union-attr]
                self._proc.stdin.flush()  # type: ignore[union-attr]
            except (OSError, ValueError) as exc:
                self._mark_gone(f"the tracking helper does not take requests: {exc}")
                raise HelperGone(self.gone) from exc
        if not wait:
            return None
        ok, result, relay = fut.result()
        _warn(relay)
        if not ok:
            raise TrackingError(*result)
        return result

    def unconfirmed(self, rid: str) -> list[tuple[str, dict[str, Any]]]:
        """The requests for run ``rid`` the helper never confirmed, in the order they were sent (forgotten here:
        the caller does them)."""
        with self._lock:
            seqs = sorted(k for k, (_, args) in self._unconfirmed.items() if args.get("rid") == rid)
            return [self._unconfirmed.pop(k) for k in seqs]

    def _read_loop(self) -> None:
        out = self._proc.stdout
        assert out is not None
        while True:
            try:
                head = out.read(_HEADER.size)
                if len(head) < _HEADER.size:
                    break
                seq, ok, result, relay = pickle.loads(out.read(_HEADER.unpack(head)[0]))
            except Exception:  # noqa: BLE001 - a broken pipe or reply: the helper is gone
                break
            with self._lock:
                fut, waited, op = self._pending.pop(seq)
                self._unconfirmed.pop(seq, None)
            if op == "configure" and ok:
                self.notes += result
                result = None
            if waited:
                fut.set_result((ok, result, relay))
            else:
                _warn(relay)
                if not ok:
                    warnings.warn(f"bars.tracking: the helper's write failed: {result[0]}: {result[1]}",
                                  TrackingWarning, stacklevel=2)
                fut.set_result(None)
        with self._lock:
            code = self._proc.poll()
            self._mark_gone(f"the tracking helper exited{'' if code is None else f' (code {code})'}")

    def _mark_gone(self, why: str) -> None:  # under self._lock
        if self.gone is None:
            self.gone = why
        for fut, _, _ in self._pending.values():
            if not fut.done():
                fut.set_exception(HelperGone(self.gone))
        self._pending.clear()

    def close(self, timeout: float = 60.0) -> None:
        """End the helper after the requests sent (it exits at the end of its input); one never configured is
        stopped at once."""
        if self.pid != os.getpid():
            return
        if self.opts is None:
            self.kill()
            return
        with contextlib.suppress(OSError, ValueError):
            self._proc.stdin.close()  # type: ignore[union-attr]
        try:
            self._proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._reader.join(timeout=5)

    def kill(self) -> None:
        """Stop the helper at once (tests: a helper that dies mid-run)."""
        self._proc.kill()
        self._proc.wait()
        self._reader.join(timeout=5)

    def print_notes(self) -> None:
        notes, self.notes = self.notes, []
        for stream, line in notes:
            print(line, file=sys.stdout if stream == "out" else sys.stderr, flush=True)


def _warn(relay: list[str]) -> None:
    for msg in relay:
        warnings.warn(msg, TrackingWarning, stacklevel=3)


_HELPERS: dict[tuple[int, str], Helper] = {}
_HELPERS_LOCK = threading.Lock()
_PRESTARTED: dict[int, Helper | None] = {}  # pid -> the helper bars train started before its config was composed


def prestart() -> None:
    """Start a helper before the config is composed (``bars train``'s first step): it imports mlflow and the
    store's modules while this process imports torch, composes and validates the config. Marks this process as
    one whose runs use the helper under ``tracking.helper=auto``; :func:`discard` undoes both. Once per process:
    a second call while the first's helper is kept does nothing."""
    if os.getpid() in _PRESTARTED:
        return
    try:
        helper: Helper | None = Helper()
    except OSError:
        helper = None
    _PRESTARTED[os.getpid()] = helper


def discard() -> None:
    """This process's runs will not use the prestarted helper (tracking off, another process of a multi-process
    run, a method's runs): stop it now."""
    helper = _PRESTARTED.pop(os.getpid(), None)
    if helper is not None and helper.opts is None:
        helper.kill()


def start(opts: dict[str, Any], housekeeping: str | None = None) -> Helper | None:
    """This process's helper for ``opts``: the prestarted one (configured now), one already serving ``opts``, or a
    new one (with the store's housekeeping first when ``housekeeping`` names the command); None when none can
    start (the run's process then writes itself)."""
    key = (os.getpid(), json.dumps(opts, sort_keys=True))
    with _HELPERS_LOCK:
        helper = _HELPERS.get(key)
        if helper is not None and helper.gone is None:
            return helper
        pre = _PRESTARTED.get(os.getpid())
        try:
            if pre is not None and pre.opts is None and pre.gone is None:
                helper = pre
            else:
                helper = Helper()
            helper.configure(opts, housekeeping)
        except (OSError, HelperGone) as exc:
            print(f"bars.tracking: could not start the tracking helper ({exc}); this process writes itself",
                  file=sys.stderr, flush=True)
            return None
        _HELPERS[key] = helper
        return helper


@atexit.register
def close_all() -> None:
    """End this process's helpers (after the requests sent to them): at exit, and between tests."""
    with _HELPERS_LOCK:
        helpers = [*_HELPERS.values(), *(h for h in _PRESTARTED.values() if h is not None)]
        _HELPERS.clear()
        _PRESTARTED.pop(os.getpid(), None)
    for helper in helpers:
        with contextlib.suppress(Exception):
            helper.close()


# ------------------------------------------------------------------------------------------------ run handles


def failure_tags(exc: BaseException) -> dict[str, str]:
    """The tags a run that failed with ``exc`` ends with (``error``, ``error_type``, ``error_traceback``)."""
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return {"error": f"{type(exc).__name__}: {exc}"[:MAX_TAG_VALUE], "error_type": type(exc).__name__,
            "error_traceback": tb[-MAX_TAG_VALUE:]}


@contextlib.contextmanager
def ended_on_exit(run: Any) -> Iterator[Any]:
    """Yield ``run``; then end it FAILED on an exception (re-raised, :func:`failure_tags`), KILLED on any other
    BaseException (KeyboardInterrupt, SystemExit), else FINISHED unless it was ended already."""
    try:
        yield run
    except Exception as exc:
        run.fail(exc)
        raise
    except BaseException as exc:
        run.end("KILLED", {"error": f"{type(exc).__name__}: {exc}"[:MAX_TAG_VALUE], "error_type": type(exc).__name__})
        raise
    else:
        if not run.ended:
            run.end("FINISHED")


class RemoteRun:
    """A run written through the helper, with ``TrackedRun``'s interface (what ``bars.run`` calls)."""

    def __init__(self, helper: Helper, run_id: str, name: str | None, artifact_uri: str | None, uri: str) -> None:
        self.helper = helper
        self.run_id = run_id
        self.name = name
        self.artifact_uri = artifact_uri
        self.uri = uri
        self.ended = False
        self.status = "RUNNING"
        self._local: Any = None  # the in-process TrackedRun once the helper is gone

    def _send(self, op: str, args: dict[str, Any], wait: bool = True) -> Any:
        args = {"rid": self.run_id, "artifact_uri": self.artifact_uri, **args}
        if self._local is None:
            try:
                return self.helper.call(op, args, wait)
            except HelperGone:
                return self._take_over()  # the request is among the unconfirmed ones it repeats
        return apply(self._local, op, args)

    def _take_over(self) -> Any:
        from bars.tracking import TrackedRun, Tracker

        todo = self.helper.unconfirmed(self.run_id)
        print(f"bars.tracking: {self.helper.gone}; this process writes run {self.run_id} itself from now on "
              f"({len(todo)} request(s) the helper had not confirmed repeated)", file=sys.stderr, flush=True)
        self._local = TrackedRun(Tracker(**self.helper.opts), self.run_id, self.name, self.artifact_uri)
        out = None
        for op, args in todo:
            out = apply(self._local, op, args)
        return out

    def log(self, metrics: Mapping[str, Any] | None = None, step: int | None = None, *, params: Any = None,
            tags: Mapping[str, Any] | None = None, wait: bool = True) -> None:
        from bars.config import to_container

        self._send("log", {"metrics": plain(dict(metrics or {})), "step": None if step is None else int(step),
                           "params": None if params is None else plain(to_container(params)),
                           "tags": plain(dict(tags or {}))}, wait)

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None, *, wait: bool = True) -> None:
        self.log(metrics, step, wait=wait)

    def log_params(self, params: Any, *, wait: bool = True) -> None:
        self.log(params=params, wait=wait)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        self.log(tags=tags)

    def flush(self) -> None:
        self._send("flush", {})

    def log_files(self, files: Mapping[str, Any]) -> None:
        self._send("files", {"files": dict(files)})

    def log_artifact(self, path: Any, artifact_path: str | None = None) -> None:
        self._send("artifact", {"path": str(path), "artifact_path": artifact_path})

    def log_text(self, text: str, name: str) -> None:
        self._send("text", {"text": text, "name": name})

    def log_dict(self, d: Any, name: str) -> None:
        from bars.config import to_container

        self._send("dict", {"data": plain(to_container(d)), "name": name})

    def log_figure(self, fig: Any, name: str) -> None:
        from bars.plotting import render_png

        self.log_files({name: render_png(fig)})

    def fail(self, exc: BaseException) -> None:
        self.end("FAILED", failure_tags(exc))

    def end(self, status: str = "FINISHED", tags: Mapping[str, Any] | None = None) -> None:
        if self.ended:
            return
        self._send("end", {"status": status, "tags": plain(dict(tags or {}))})
        self.ended = True
        self.status = status


class RemoteTracker:
    """``Tracker.run`` through the helper: the run's process opens and ends runs, the helper writes."""

    def __init__(self, helper: Helper) -> None:
        self.helper = helper

    def start_run(self, name: str | None = None, tags: Mapping[str, Any] | None = None, params: Any = None,
                  parent_run_id: str | None = None, *, description: str | None = None) -> Any:
        from bars.config import to_container
        from bars.environment import environment_tags

        args = {"name": name, "tags": plain(dict(tags or {})),
                "params": None if params is None else plain(to_container(params)),
                "parent_run_id": parent_run_id, "description": description,
                "environment": plain(environment_tags())}  # this process's pid, command and versions, not the helper's
        try:
            rid, run_name, artifact_uri, uri = self.helper.call("start", args)
        except HelperGone:  # never started or died: this process opens the store itself
            self.helper.print_notes()
            from bars.tracking import Tracker

            print(f"bars.tracking: {self.helper.gone}; this process writes itself", file=sys.stderr, flush=True)
            return Tracker(**self.helper.opts).start_run(name, tags, params, parent_run_id,
                                                         description=description)
        finally:
            self.helper.print_notes()
        return RemoteRun(self.helper, rid, run_name, artifact_uri, uri)

    @contextlib.contextmanager
    def run(self, name: str | None = None, tags: Mapping[str, Any] | None = None, params: Any = None,
            parent_run_id: str | None = None, *, description: str | None = None) -> Iterator[Any]:
        """As ``Tracker.run``: FAILED on an exception (re-raised), KILLED on any other BaseException, else
        FINISHED."""
        with ended_on_exit(self.start_run(name, tags, params, parent_run_id, description=description)) as run:
            yield run


def tracker_for(cfg: Any) -> Any:
    """The tracker a run of ``cfg`` uses: through the helper when :func:`wanted` (started now if it is not yet),
    else ``bars.tracking.tracker_of(cfg)`` in this process."""
    if wanted(cfg):
        helper = start(options_of(cfg))
        if helper is not None:
            return RemoteTracker(helper)
    from bars.tracking import tracker_of

    return tracker_of(cfg)


__all__ = ["HelperGone", "RemoteRun", "RemoteTracker", "TrackingError", "TrackingWarning", "close_all", "dict_text",
           "discard", "options_of", "plain", "prestart", "redacted", "serve", "start", "tracker_for", "wanted"]
