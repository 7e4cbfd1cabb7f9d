"""The import page in a real browser (Debian's Chromium through Playwright) against
the real app and a real SQLite store: a person importing a customer base, checking
the mapping and the bad rows, confirming, then undoing the import."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.async_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    Response,
    async_playwright,
    expect,
)
from sqlalchemy import func, select

from crm_store import Role, Store
from crm_store import _models as m
from tests.crm_store._import_files import cyrillic_clients
from web._services import Services
from web.app import create_app
from web.server import HttpServer

from ._auth_fixtures import CONFIG, NoCalls, no_commands, store

__all__ = ["store"]  # the fixture: a migrated SQLite store

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
PASSWORD = "correct horse battery"
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Site:
    url: str
    store: Store
    browser: Browser
    contexts: list[BrowserContext] = field(default_factory=list)
    #: Server errors, refused static files, script errors, CSP violations.
    bad: list[str] = field(default_factory=list)

    async def page(self, username: str) -> Page:
        context = await self.browser.new_context(locale="en-GB", timezone_id="Europe/Paris")
        self.contexts.append(context)

        def seen(response: Response) -> None:
            path = urlsplit(response.url).path
            if response.status >= 500 or (response.status >= 400 and path.startswith("/static/")):
                self.bad.append(f"{response.status} {response.url}")

        def console(message: ConsoleMessage) -> None:
            if message.type == "error" and "Failed to load resource" not in message.text:
                self.bad.append(f"console: {message.text}")

        context.on("response", seen)
        page = await context.new_page()
        page.on("console", console)
        page.on("pageerror", lambda error: self.bad.append(f"page error: {error}"))
        await page.goto(f"{self.url}/login?next=/import")
        await page.fill("#username", username)
        await page.fill("#password", PASSWORD)
        await page.click("[data-testid=login-submit]")
        await page.wait_for_url(f"{self.url}/import")
        await expect(page.locator("#import-page")).to_have_attribute("data-ready", "true")
        return page

    async def clients(self) -> int:
        async with self.store.engine.connect() as conn:
            return int(await conn.scalar(select(func.count()).select_from(m.clients)) or 0)


@pytest.fixture
async def site(store: Store) -> AsyncIterator[Site]:
    for name, role in (("sue", Role.SUPERVISOR), ("alice", Role.AGENT)):
        user = await store.users.add(name, f"{name.title()} Test", role)
        await store.users.set_password(user.id, PASSWORD)
    services = Services(
        store=store,
        config=lambda: CONFIG,
        agents=None,
        commands=no_commands,
        calls=NoCalls(),
        ready=lambda: True,
    )
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM)
        try:
            async with HttpServer(create_app(services), host="127.0.0.1", port=_free_port()) as s:
                found = Site(s.url, store, browser)
                try:
                    yield found
                    assert found.bad == []
                finally:
                    for context in found.contexts:
                        await context.close()
        finally:
            await browser.close()


async def test_a_cyrillic_base_is_mapped_checked_imported_and_undone(
    site: Site, tmp_path: Path
) -> None:
    sheet = cyrillic_clients(1000)
    path = tmp_path / "база клиентов.csv"
    path.write_bytes(sheet.data)
    page = await site.page("sue")
    await expect(page.get_by_test_id("nav-import")).to_have_attribute("aria-current", "page")

    await page.get_by_test_id("import-file").set_input_files(str(path))
    counts = page.get_by_test_id("import-counts")
    await expect(counts).to_have_text(
        "1000 rows: 997 to create, 0 to update, 0 duplicates to skip, 3 bad rows."
    )
    await expect(page.get_by_test_id("import-read-as")).to_have_text(
        "Read as CSV in windows-1251, delimiter “;”."
    )
    for index, chosen in enumerate(("last_name", "first_name", "phone", "email", "city")):
        await expect(page.get_by_test_id(f"map-{index}")).to_have_value(chosen)
    sample = page.get_by_test_id("import-sample")
    await expect(sample.locator("thead th").nth(1)).to_have_text("Фамилия → Last name")
    await expect(sample.locator("tbody tr").first).to_contain_text("Иванов-0")
    bad = page.get_by_test_id("import-bad-rows").locator("li")
    await expect(bad).to_have_count(3)
    lines = [int(x) for x in await bad.evaluate_all("items => items.map(i => i.dataset.line)")]
    assert lines == sorted(sheet.bad)
    await expect(bad.nth(0)).to_contain_text(f"line {lines[0]}: phone '12-34'")
    assert await site.clients() == 0

    # Not mapping the name leaves nothing to import, and says why.
    await page.get_by_test_id("map-0").select_option("")
    await page.get_by_test_id("map-1").select_option("")
    await expect(page.get_by_test_id("import-mapping-problems")).to_be_visible()
    await expect(page.get_by_test_id("import-confirm")).to_be_disabled()
    await page.get_by_test_id("map-0").select_option("last_name")
    await page.get_by_test_id("map-1").select_option("first_name")
    confirm = page.get_by_test_id("import-confirm")
    await expect(confirm).to_have_text("Import 997 rows and leave out the 3 bad ones")
    await expect(page.get_by_test_id("import-mapping-problems")).to_be_hidden()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.set_viewport_size({"width": 1280, "height": 800})
    await page.screenshot(
        path=str(SCREENSHOTS / "import-mapping.png"), full_page=True, animations="disabled"
    )
    assert await site.clients() == 0

    await confirm.click()
    await expect(page.get_by_test_id("import-result")).to_have_text(
        "Imported: 997 created, 0 updated, 0 skipped."
    )
    assert await site.clients() == 997
    history = page.get_by_test_id("import-history").locator("tbody tr")
    await expect(history).to_have_count(1)
    await expect(history.first).to_contain_text("база клиентов.csv")

    await history.first.get_by_test_id("import-undo").click()
    sure = page.get_by_test_id("import-undo-confirm")
    await expect(sure).to_be_focused()
    await expect(sure).to_have_text("Remove the 997 created and restore the 0 updated")
    await page.keyboard.press("Enter")
    await expect(history.first).to_have_class("undone")
    assert await site.clients() == 0


async def test_an_agent_exports_and_builds_lists_but_does_not_import(site: Site) -> None:
    page = await site.page("alice")
    await expect(page.get_by_test_id("import-file")).to_have_count(0)
    await expect(page.get_by_test_id("dnc-number")).to_have_count(0)
    async with page.expect_download() as download_info:
        await page.get_by_test_id("export-clients-csv").click()
    download = await download_info.value
    assert download.suggested_filename.startswith("clients-")
    assert download.suggested_filename.endswith(".csv")
