"""The browser tests' harness: the lab, a real daemon on it, a real browser.

One lab and one ``switchboard run`` serve a whole test module (starting them costs
seconds; the scenarios leave them as they found them): the lab runs on an event
loop of its own, in a thread, so that the tests themselves are plain functions
driving Playwright's synchronous API (which refuses to run inside an event loop);
:meth:`E2eLab.run` hands a coroutine to the lab's loop and waits for its result.

The daemon's configuration is the demo's (``config/examples/switchboard.toml``
pointed at the lab, :func:`lab.demo.demo_config`) on free ports, its store seeded
with the demo data set (:mod:`lab.seed`), so the pages show what a newcomer sees
with ``make demo``. Alice's desk phone (1001) never answers by itself: her widget
answers (the daemon asks the phone to auto-answer). Bob's (1002) and Chloé's (1003)
answer.

The browser is Debian's Chromium (``/usr/bin/chromium``), headless, one context per
agent and test. :func:`shot` writes the screenshots the documentation shows into
``docs/screenshots/``.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    Locator,
    Page,
    Playwright,
    expect,
    sync_playwright,
)

from lab import free_port_block
from lab.__main__ import PHONES, demo_extensions
from lab.demo import EXAMPLE, demo_config, dump_toml, prepare_store
from lab.phones import PhoneSpec
from lab.runner import Lab

T = TypeVar("T")

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "docs" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
VIEWPORT = {"width": 1280, "height": 800}
# Waits on the page: long enough for a call through the lab on two busy cores.
expect.set_options(timeout=15_000)


class E2eLab:
    """A :class:`Lab` running on its own event loop in a thread."""

    def __init__(self, run_dir: Path, phones: list[str | PhoneSpec]) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="e2e-lab", daemon=True)
        self._thread.start()
        self.lab: Lab = self.run(Lab.start(run_dir, extensions=demo_extensions(), phones=phones))

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        """Run ``coro`` on the lab's loop; its result (or exception)."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def close(self) -> None:
        try:
            self.run(self.lab.stop(), timeout=60)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self._loop.close()


@dataclass
class Daemon:
    """A ``switchboard run`` child on the e2e configuration."""

    config: Path
    base_url: str
    ws_port: int
    log_path: Path
    passwords: dict[str, str]
    store_url: str
    proc: subprocess.Popen[bytes] | None = None
    starts: int = field(default=0)

    def start(self, *, timeout: float = 60.0) -> None:
        """Start the daemon and wait until ``/readyz`` answers ready."""
        self.starts += 1
        with self.log_path.open("ab") as log:
            log.write(f"\n--- start {self.starts} ---\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "switchboard", "--config", str(self.config), "run"],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.wait_ready(timeout=timeout)

    def wait_ready(self, *, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not ready(self.base_url):
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"the daemon exited ({self.proc.returncode}):\n{self.log()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"not ready within {timeout} s:\n{self.log()}")
            time.sleep(0.2)

    def stop(self, *, timeout: float = 30.0) -> int:
        """SIGTERM, then wait; the exit status."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        return self.proc.returncode

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-20_000:]


def ready(base_url: str) -> bool:
    """Whether ``base_url/readyz`` answers ``{"status": "ready"}``."""
    try:
        with urllib.request.urlopen(f"{base_url}/readyz", timeout=2) as reply:
            return bool(json.load(reply).get("status") == "ready")
    except (OSError, ValueError):
        return False


def free_tcp_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def e2e_config(lab: Lab, run_dir: Path) -> dict[str, Any]:
    """The demo's configuration on free ports, with settings the scenarios rely on:
    wrap-up required after a call, short dialer gaps, one attempt per number."""
    data = demo_config(
        EXAMPLE,
        pbx_port=lab.pbx_port,
        run_dir=run_dir,
        domain=lab.domain,
        http_port=free_tcp_port(),
        websocket_port=free_tcp_port(),
    )
    rtp_first = random.randrange(32000, 39000, 100)
    data["sip"].update(
        port_range_start=free_port_block(8),
        max_workers=8,
        rtp_port_range=[rtp_first, rtp_first + 799],
        restart_backoff_max=5,
    )
    data["pbx"]["register_expires"] = 120
    data["logging"] = {"format": "json", "level": "info"}
    data["dialer"].update(gap_seconds=1, ring_timeout=10, max_attempts=1, wrap_up_seconds=0)
    data["inbound"].update(agent_ring_seconds=20, no_agent_timeout=30)
    data["widget"] = {"wrap_up": "required"}
    data["recording"]["retention_days"] = 0
    return data


@pytest.fixture(scope="module")
def e2e_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[E2eLab]:
    """The lab for a module: phones 1001 (answers only when asked), 1002, 1003."""
    run_dir = tmp_path_factory.mktemp("e2e-lab")
    phones: list[str | PhoneSpec] = [PhoneSpec(PHONES[0], mode="never"), *PHONES[1:]]
    running = E2eLab(run_dir, phones)
    yield running
    running.close()


@pytest.fixture(scope="module")
def daemon(e2e_lab: E2eLab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """A seeded daemon on the module's lab, ready, stopped at the end."""
    run_dir = tmp_path_factory.mktemp("e2e-daemon")
    data = e2e_config(e2e_lab.lab, run_dir)
    config = run_dir / "switchboard.toml"
    config.write_text(dump_toml(data))
    passwords = e2e_lab.run(prepare_store(config, data, run_dir=run_dir))
    running = Daemon(
        config=config,
        base_url=f"http://127.0.0.1:{data['http']['port']}",
        ws_port=data["websocket"]["port"],
        log_path=run_dir / "daemon.log",
        passwords=passwords,
        store_url=data["store"]["url"],
    )
    running.start()
    assert e2e_lab.run(e2e_lab.lab.pbx.contacts(data["lines"][3]["extension"])), "reception"
    yield running
    status = running.stop()
    assert status == 0, running.log()


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    # No browser is ever downloaded: Debian's Chromium is the one driven.
    os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (make setup does)")
    launched = playwright.chromium.launch(
        executable_path=CHROMIUM,
        headless=True,
        # Autoplay without a gesture, so the ring's WebAudio path runs headless too.
        args=["--autoplay-policy=no-user-gesture-required"],
    )
    yield launched
    launched.close()


@dataclass
class Agent:
    """One person's browser context, logged in."""

    user: str
    context: BrowserContext
    page: Page
    daemon: Daemon

    def new_tab(self) -> Page:
        """Another tab of the same session on the widget, ready."""
        page = self.context.new_page()
        page.goto("/widget")
        wait_ready(page)
        return page

    def csrf(self) -> str:
        """The session's CSRF token."""
        return _api_csrf(self.context)

    def api(self, method: str, path: str, body: Any = None, *, csrf: str | None = None) -> Any:
        """An API request with the session's cookie (and CSRF header unless ``csrf``
        overrides it); the Playwright response."""
        headers = {"X-CSRF-Token": csrf if csrf is not None else self.csrf()}
        return self.context.request.fetch(
            path, method=method, headers=headers, data=None if body is None else body
        )


def wait_ready(page: Page) -> None:
    """Wait until the widget applied the websocket's snapshot."""
    expect(page.locator("body")).to_have_attribute("data-ready", "true")


def login_in_browser(page: Page, user: str, password: str) -> None:
    """Log in through the login form; the widget ends up loaded and ready."""
    page.goto("/login")
    page.fill("#username", user)
    page.fill("#password", password)
    page.click("[data-testid=login-submit]")
    page.wait_for_url("**/widget")
    wait_ready(page)


def api_login(context: BrowserContext, user: str, password: str) -> str:
    """Log ``context`` in through the API; the session's CSRF token."""
    reply = context.request.post("/api/auth/login", data={"username": user, "password": password})
    assert reply.status == 200, reply.text()
    return str(reply.json()["csrf_token"])


@pytest.fixture
def open_agent(browser: Browser, daemon: Daemon) -> Iterator[Callable[..., Agent]]:
    """``open_agent("alice")``: a new browser context logged in as that user, on
    the widget and ready. Closed at the end of the test."""
    opened: list[BrowserContext] = []

    def _open(user: str, *, via_form: bool = True) -> Agent:
        context = browser.new_context(base_url=daemon.base_url, viewport=VIEWPORT)  # type: ignore[arg-type]
        opened.append(context)
        page = context.new_page()
        if via_form:
            login_in_browser(page, user, daemon.passwords[user])
        else:
            api_login(context, user, daemon.passwords[user])
            page.goto("/widget")
            wait_ready(page)
        return Agent(user=user, context=context, page=page, daemon=daemon)

    yield _open
    for context in opened:
        context.close()


def _api_csrf(context: BrowserContext) -> str:
    """The session's CSRF token (``GET /api/auth/me`` with the session's cookie)."""
    reply = context.request.get("/api/auth/me")
    assert reply.ok, reply.text()
    return str(reply.json()["csrf_token"])


def shot(page: Page, name: str, focus: Locator | None = None) -> Path:
    """Save a screenshot of the page as ``docs/screenshots/<name>.png`` (1280x800).

    ``focus``: the element the picture is about, scrolled into view first;
    without it, the page from its top."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    if focus is None:
        page.evaluate("window.scrollTo(0, 0)")
        page.wait_for_function("window.scrollY === 0")
    else:
        focus.scroll_into_view_if_needed()
        expect(focus).to_be_in_viewport()
    page.screenshot(path=str(path), animations="disabled")
    return path


def wait_until(check: Callable[[], T], *, timeout: float = 15.0, what: str = "") -> T:
    """Poll ``check`` until it returns something true; that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what or check}")
        time.sleep(0.1)


__all__ = [
    "Agent",
    "Daemon",
    "E2eLab",
    "api_login",
    "browser",
    "daemon",
    "e2e_lab",
    "login_in_browser",
    "open_agent",
    "playwright",
    "shot",
    "wait_ready",
    "wait_until",
]
