"""A run's learning curve PNG, and the helper process that renders it off the run's path (issue 16).

:func:`learning_curve` (a two-panel matplotlib Figure) and :func:`render_png` (its PNG bytes) are what a tracked run
logs as ``learning_curve.png``. Rendering takes 0.15-0.3 s of matplotlib (pure Python) per run, and importing
matplotlib 1-1.5 s per process. Rendered in a thread of the run's process (sessions 10-11), it held the GIL while
the main thread ran the test pass: the test pass took twice as long as alone (the GIL hand-over after every torch op
of the main thread waits for the renderer's switch interval), which ate more than the overlap saved.

So a run's process hands the rendering to one helper process (:class:`Renderer`, started at most once per process
and reused by every later run, e.g. a sweep's trials): the run sends its history (the text of ``history.json``)
and title when ``fit`` returns, goes on with the test pass, and collects the PNG bytes at the end. The helper
renders with the same function from the same JSON values (floats round-trip exactly), so the bytes are those of
rendering in place (tested). The helper reads requests from its stdin and exits at end of input, so it never
outlives its parent. When the helper cannot start, dies, or does not answer within :data:`REPLY_TIMEOUT_S`, the
run renders the PNG itself, in its own thread after the test pass (no other thread competes for the GIL then): a PNG
is never lost to the helper. A helper that failed is not used again by that process. ``BARS_RENDER=inline`` renders in place always (no helper).

This module imports only the standard library at import time (matplotlib when rendering): the helper process
imports it and matplotlib, nothing else of bars.
"""

from __future__ import annotations

import io
import json
import os
import select
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

REPLY_TIMEOUT_S = 120.0  # a render takes well under a second; a loaded machine may stretch it several-fold
_HEADER = struct.Struct("!I")  # request/reply length prefix (payload bytes)


def learning_curve(history: Sequence[Any], title: str = "") -> Any:
    """A two-panel matplotlib Figure: train loss and validation AUC per epoch (no pyplot state touched).
    ``history``: objects with ``epoch``, ``train_loss``, ``val`` (a dict), ``monitor`` and ``improved``
    (``bars.train.EpochLog``, or the same fields read back from ``history.json``)."""
    from matplotlib.figure import Figure

    epochs = [h.epoch for h in history]
    fig = Figure(figsize=(9, 3.5), dpi=100)
    ax1, ax2 = fig.subplots(1, 2)
    ax1.plot(epochs, [h.train_loss for h in history], marker="o")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("train loss")
    ax1.grid(alpha=0.3)
    single = all("auc" in h.val for h in history)  # a multi-task run has auc_<task> keys: plot its monitor
    aucs = [h.val["auc"] if single else h.monitor for h in history]
    ax2.plot(epochs, aucs, marker="o", color="tab:orange", label="val AUC" if single else "val monitor")
    if aucs:
        improved = [i for i, h in enumerate(history) if h.improved]
        best = max(range(len(aucs)), key=aucs.__getitem__) if single or not improved else improved[-1]
        ax2.scatter([epochs[best]], [aucs[best]], s=80, facecolors="none", edgecolors="k", label="best")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("validation AUC" if single else "validation monitor")
    ax2.grid(alpha=0.3)
    ax2.legend(loc="lower right")
    if title:
        fig.suptitle(title)
    # fixed margins: tight_layout measured every label (0.4 s a run on a loaded 2-core machine, issue 16)
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.14, top=0.86 if title else 0.95, wspace=0.28)
    return fig


def render_png(fig: Any) -> bytes:
    """A matplotlib Figure as PNG bytes (what ``savefig(format="png")`` writes)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def history_records(history_json: str) -> list[SimpleNamespace]:
    """The epochs of a ``history.json`` text as objects with the EpochLog fields :func:`learning_curve` reads."""
    return [SimpleNamespace(**d) for d in json.loads(history_json)]


def render_history(history_json: str, title: str) -> bytes:
    """The learning curve PNG of a ``history.json`` text (what the helper process runs for each request)."""
    return render_png(learning_curve(history_records(history_json), title))


# ----------------------------------------------------------------------------------------------- the helper


def serve(stdin: Any = None, stdout: Any = None) -> int:
    """The helper's loop: read ``length + JSON {"history": text, "title": str}`` requests from stdin, answer each
    with ``length + status byte + payload`` (``b"P"`` + PNG bytes, or ``b"E"`` + the error as UTF-8 text), until
    end of input. matplotlib is imported first, so the helper is ready before the first request comes."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C stops the run; the helper ends at end of input
    fin = stdin or sys.stdin.buffer
    fout = stdout or sys.stdout.buffer
    import matplotlib.figure  # noqa: F401 - warm: the first request does not pay the import
    from matplotlib.backends import backend_agg  # noqa: F401

    while True:
        head = fin.read(_HEADER.size)
        if len(head) < _HEADER.size:
            return 0
        body = fin.read(_HEADER.unpack(head)[0])
        try:
            req = json.loads(body)
            reply = b"P" + render_history(req["history"], req.get("title", ""))
        except Exception as exc:  # noqa: BLE001 - told to the run, which renders in place (and warns) instead
            reply = b"E" + f"{type(exc).__name__}: {exc}".encode("utf-8", "replace")
        fout.write(_HEADER.pack(len(reply)) + reply)
        fout.flush()


class RenderUnavailable(RuntimeError):
    """The helper could not take or answer a request (not started, exited, timed out): render in place."""


class Renderer:
    """The client side: one helper process per parent process, started on first use (or by :meth:`start`) and
    shared by every run of the process. Requests are answered in order; :meth:`submit` returns a ticket at once
    and :meth:`result` waits for that ticket's reply. Thread-safe; a forked child starts a helper of its own."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._pid: int | None = None
        self._sent = 0  # tickets handed out
        self._read = 0  # replies read
        self._replies: dict[int, tuple[bytes, bytes]] = {}
        self._dropped: set[int] = set()  # tickets whose reply nobody will collect (their run failed)
        self._broken: str | None = None  # why the helper cannot be used (then every request renders in place)

    # -- the process ----------------------------------------------------------------------------------------
    def _command(self) -> list[str]:
        root = str(Path(__file__).resolve().parent.parent)  # the folder holding the bars package
        code = "import sys; sys.path.insert(0, sys.argv[1]); from bars.plotting import serve; sys.exit(serve())"
        return [sys.executable, "-c", code, root]

    def _ensure(self) -> subprocess.Popen[bytes]:
        if self._pid != os.getpid():  # first use, or a forked child holding its parent's pipes: a helper of its own
            self._proc, self._pid, self._sent, self._read, self._replies, self._dropped, self._broken = \
                None, os.getpid(), 0, 0, {}, set(), None
        if self._broken is not None:
            raise RenderUnavailable(self._broken)
        if self._proc is None:
            try:
                self._proc = subprocess.Popen(self._command(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                              stderr=subprocess.DEVNULL, close_fds=True)
            except OSError as exc:
                self._broken = f"could not start the render helper: {exc}"
                raise RenderUnavailable(self._broken) from exc
        if self._proc.poll() is not None:
            self._fail(f"the render helper exited (code {self._proc.returncode})")
        return self._proc

    def _fail(self, why: str) -> None:
        self._broken = why
        self._stop()
        raise RenderUnavailable(why)

    def _stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        for f in (proc.stdin, proc.stdout):
            try:
                f.close()  # type: ignore[union-attr]
            except OSError:
                pass
        try:
            proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def start(self) -> None:
        """Start the helper now (it imports matplotlib meanwhile); never raises."""
        if os.environ.get("BARS_RENDER", "").lower() == "inline":
            return
        with self._lock:
            try:
                self._ensure()
            except RenderUnavailable:
                pass

    def close(self) -> None:
        """End the helper (it exits at end of input); a later request starts a new one."""
        with self._lock:
            if self._pid == os.getpid():
                self._stop()
                self._broken = None

    # -- requests -------------------------------------------------------------------------------------------
    def submit(self, history_json: str, title: str) -> int:
        """Send one learning curve to render; returns its ticket. Raises :class:`RenderUnavailable`."""
        if os.environ.get("BARS_RENDER", "").lower() == "inline":
            raise RenderUnavailable("BARS_RENDER=inline")
        body = json.dumps({"history": history_json, "title": title}).encode("utf-8")
        with self._lock:
            proc = self._ensure()
            try:
                proc.stdin.write(_HEADER.pack(len(body)) + body)  # type: ignore[union-attr]
                proc.stdin.flush()  # type: ignore[union-attr]
            except OSError as exc:
                self._fail(f"the render helper does not take requests: {exc}")
            ticket = self._sent
            self._sent += 1
            return ticket

    def result(self, ticket: int, timeout: float = REPLY_TIMEOUT_S) -> bytes:
        """The PNG bytes of ``ticket``. Raises :class:`RenderUnavailable` (helper gone or silent: render in
        place) or ``RuntimeError`` (the helper's rendering raised: the message)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            if self._pid != os.getpid():
                raise RenderUnavailable("the render helper belongs to another process")
            while ticket not in self._replies:
                if self._proc is None or ticket >= self._sent:
                    raise RenderUnavailable(self._broken or "no such request")
                head = self._read_exact(_HEADER.size, deadline)
                body = self._read_exact(_HEADER.unpack(head)[0], deadline)
                if self._read in self._dropped:
                    self._dropped.discard(self._read)
                else:
                    self._replies[self._read] = (body[:1], body[1:])
                self._read += 1
            status, payload = self._replies.pop(ticket)
        if status != b"P":
            raise RuntimeError(payload.decode("utf-8", "replace"))
        return payload

    def drop(self, ticket: int) -> None:
        """Nobody will collect ``ticket`` (its run failed before the end): its reply is discarded when read."""
        with self._lock:
            if self._pid == os.getpid() and self._replies.pop(ticket, None) is None and ticket >= self._read:
                self._dropped.add(ticket)

    def _read_exact(self, n: int, deadline: float) -> bytes:
        assert self._proc is not None and self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        chunks: list[bytes] = []
        while n > 0:
            left = deadline - time.monotonic()
            ready = select.select([fd], [], [], max(left, 0.0))[0] if left > 0 else []
            if not ready:
                self._fail(f"the render helper did not answer within {REPLY_TIMEOUT_S:.0f} s")
            chunk = os.read(fd, n)
            if not chunk:
                self._fail("the render helper exited")
            chunks.append(chunk)
            n -= len(chunk)
        return b"".join(chunks)


_RENDERER = Renderer()


def renderer() -> Renderer:
    """The process's :class:`Renderer`."""
    return _RENDERER


__all__ = ["REPLY_TIMEOUT_S", "RenderUnavailable", "Renderer", "history_records", "learning_curve", "render_history",
           "render_png", "renderer", "serve"]
