"""results/index.html in a real headless browser (Debian's `chromium`): the tables render, clicking a header
sorts, the plots load, nothing is fetched from outside the results folder and no script error occurs.

The browser is driven over the Chrome DevTools Protocol on a pipe (``--remote-debugging-pipe``: NUL-terminated
JSON on fds 3/4), so the test needs nothing beyond the chromium binary: no webdriver, no Python packages.
Clicks are real mouse events (``Input.dispatchMouseEvent``) at the header's on-screen position.

Skipped when no chromium is installed, unless ``BARS_REQUIRE_BROWSER=1`` (CI sets it), then it fails.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import json
import os
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _leaderboard_store import LAYOUT, populate

from bars import leaderboard as lb

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_browser() -> str | None:
    env = os.environ.get("BARS_BROWSER")
    if env:
        return env
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return os.path.realpath(path)
    return None


class CDPError(RuntimeError):
    pass


class Browser:
    """Headless chromium with one page, spoken to over --remote-debugging-pipe."""

    def __init__(self, binary: str, profile: Path, timeout: float = 30.0) -> None:
        self.timeout = timeout
        cmd_r, self._cmd_w = os.pipe()  # we write commands -> the browser reads them on fd 3
        self._resp_r, resp_w = os.pipe()  # the browser writes replies on fd 4 -> we read
        # keep the child's ends away from 0..4 so that moving them onto 3 and 4 cannot clobber one another
        child = []
        for fd in (cmd_r, resp_w):
            high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 5)
            os.close(fd)
            child.append(high)
        cmd_r, resp_w = child
        args = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--no-first-run", "--no-default-browser-check", "--disable-extensions",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--remote-debugging-pipe", f"--user-data-dir={profile}", "about:blank"]
        # a tiny launcher moves our pipe ends onto fds 3 and 4, then execs the browser (no preexec_fn)
        launcher = ("import os, sys; os.dup2(int(sys.argv[1]), 3); os.dup2(int(sys.argv[2]), 4); "
                    "os.close(int(sys.argv[1])); os.close(int(sys.argv[2])); os.execv(sys.argv[3], sys.argv[3:])")
        profile.mkdir(parents=True, exist_ok=True)
        self.log = profile.parent / f"{profile.name}.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen([sys.executable, "-c", launcher, str(cmd_r), str(resp_w), *args],
                                         pass_fds=(cmd_r, resp_w), stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=log)
        os.close(cmd_r)
        os.close(resp_w)
        self._buf = b""
        self._id = 0
        self.events: list[dict] = []
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page.enable", "Runtime.enable", "Network.enable"):
            self.call(domain, session=True)
        self.call("Emulation.setDeviceMetricsOverride",
                  {"width": 1600, "height": 1000, "deviceScaleFactor": 1, "mobile": False}, session=True)

    # -- protocol ------------------------------------------------------------------------------------------
    def _read_message(self, deadline: float) -> dict:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise CDPError("timed out waiting for the browser")
            ready, _, _ = select.select([self._resp_r], [], [], left)
            if ready:
                chunk = os.read(self._resp_r, 1 << 20)
                if not chunk:
                    raise CDPError(f"browser closed the pipe (exit {self.proc.poll()}): {self._log_tail()}")
                self._buf += chunk
        raw, self._buf = self._buf.split(b"\0", 1)
        return json.loads(raw)

    def call(self, method: str, params: dict | None = None, *, session: bool = False) -> dict:
        self._id += 1
        msg: dict = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = self.session
        try:
            os.write(self._cmd_w, json.dumps(msg).encode() + b"\0")
        except BrokenPipeError:
            raise CDPError(f"browser is gone (exit {self.proc.poll()}): {self._log_tail()}") from None
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise CDPError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def _log_tail(self) -> str:
        lines = self.log.read_text(errors="replace").splitlines()
        return "\n".join(line for line in lines if "dbus" not in line)[-3000:]

    def wait_event(self, method: str) -> dict:
        deadline = time.monotonic() + self.timeout
        for i, ev in enumerate(self.events):
            if ev.get("method") == method:
                return self.events.pop(i)
        while True:
            ev = self._read_message(deadline)
            if ev.get("method") == method:
                return ev
            self.events.append(ev)

    # -- page helpers --------------------------------------------------------------------------------------
    def goto(self, url: str) -> None:
        self.events.clear()
        self.call("Page.navigate", {"url": url}, session=True)
        self.wait_event("Page.loadEventFired")

    def js(self, expression: str):
        r = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                           "awaitPromise": True}, session=True)
        if "exceptionDetails" in r:
            raise CDPError(f"{expression!r}: {r['exceptionDetails']}")
        return r["result"].get("value")

    def click(self, selector: str) -> None:
        """A real left click at the centre of the element (scrolled into view first)."""
        box = self.js(f"""(() => {{const el = document.querySelector({json.dumps(selector)});
            el.scrollIntoView({{block: 'center', inline: 'center'}});
            const r = el.getBoundingClientRect(); return [r.left + r.width / 2, r.top + r.height / 2];}})()""")
        x, y = box
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", {"type": kind, "x": x, "y": y, "button": "left",
                                                   "clickCount": 1}, session=True)

    def close(self) -> None:
        with contextlib.suppress(CDPError, OSError):
            self.call("Browser.close")
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._cmd_w)
        os.close(self._resp_r)


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    binary = find_browser()
    if binary is None:
        if os.environ.get("BARS_REQUIRE_BROWSER"):
            pytest.fail("BARS_REQUIRE_BROWSER is set but no chromium is installed (apt-get install chromium)")
        pytest.skip("no chromium installed (apt-get install chromium)")
    root = tmp_path_factory.mktemp("lbhtml")
    uri = populate(root)
    out = root / "results"
    lb.generate(uri, out, root=root)
    browser = Browser(binary, root / "profile")
    try:
        browser.goto((out / "index.html").as_uri())
        yield browser, out
    finally:
        browser.close()


def _rows(browser: Browser, data: str) -> list[str]:
    return browser.js(f"Array.from(document.querySelectorAll('#table-{data} tbody tr'))"
                      ".map(r => r.getAttribute('data-model'))")


def _csv(out: Path, data: str) -> dict[str, dict[str, str]]:
    with open(out / f"{data}.csv", newline="") as f:
        return {r["model"]: r for r in csv.DictReader(f)}


@pytest.mark.parametrize("data", sorted(LAYOUT))
def test_table_renders_every_model(page, data):
    browser, out = page
    rows = _rows(browser, data)
    assert sorted(rows) == sorted(LAYOUT[data])
    assert rows == list(_csv(out, data))  # same order as the CSV: best mean test AUC first
    visible = browser.js(f"(() => {{const t = document.querySelector('#table-{data}'); "
                         f"const r = t.getBoundingClientRect(); return r.width > 0 && r.height > 0 && "
                         f"getComputedStyle(t).display !== 'none';}})()")
    assert visible
    cells = browser.js(f"document.querySelector('#table-{data} tbody tr').cells.length")
    heads = browser.js(f"document.querySelectorAll('#table-{data} thead th').length")
    assert cells == heads >= 10


def test_clicking_headers_sorts(page):
    browser, out = page
    data = "movielens_small"
    th = f"#table-{data} th[data-key=%s]"
    browser.click(th % "model")
    assert _rows(browser, data) == sorted(LAYOUT[data])
    assert browser.js(f"document.querySelector('{th % 'model'}').getAttribute('aria-sort')") == "ascending"
    browser.click(th % "model")
    assert _rows(browser, data) == sorted(LAYOUT[data], reverse=True)
    assert browser.js(f"document.querySelector('{th % 'model'}').getAttribute('aria-sort')") == "descending"
    table = _csv(out, data)
    by_auc = sorted(table, key=lambda m: float(table[m]["test_auc_mean"]))
    browser.click(th % "test_auc")
    assert _rows(browser, data) == by_auc
    browser.click(th % "test_auc")
    assert _rows(browser, data) == by_auc[::-1]
    # numbers sort as numbers, not strings; missing values go last either way
    by_trials = sorted(table, key=lambda m: (int(table[m]["trials"]), m))
    browser.click(th % "trials")
    assert [int(table[m]["trials"]) for m in _rows(browser, data)] == [int(table[m]["trials"]) for m in by_trials]
    # sorting one table leaves the other alone
    assert _rows(browser, "frappe_x1") == list(_csv(out, "frappe_x1"))


def test_plots_load(page):
    browser, out = page
    images = browser.js("Promise.all(Array.from(document.images).map(img => img.decode().then("
                        "() => [img.getAttribute('src'), img.naturalWidth, img.naturalHeight],"
                        "() => [img.getAttribute('src'), 0, 0])))")
    assert len(images) == 4 * len(LAYOUT)  # test AUC, sweeps, tuning-budget curves, learning curves
    for src, w, h in images:
        assert w > 100 and h > 100, src
        assert (out / src).is_file()


def test_self_contained_and_no_script_errors(page):
    browser, _ = page
    browser.goto(browser.js("location.href"))  # reload, recording every request
    urls = [e["params"]["request"]["url"] for e in browser.events if e.get("method") == "Network.requestWillBeSent"]
    assert urls and all(u.startswith("file://") for u in urls), urls
    errors = [e for e in browser.events if e.get("method") == "Runtime.exceptionThrown"]
    assert not errors, errors
