"""The web console in a real browser (Debian's Chromium, driven by Playwright) against
every service running as a real process.

A rep works a deal from lead to a paid order, a rep of another team cannot see it, a rep
fills a deal's custom fields and moves deals in bulk, an operator dry-runs and runs the
purge that removes the first deal. On each page axe-core finds no
serious or critical violation, and screenshots land in test-results/console/.

Chromium is required, not optional: a machine without it fails these tests (`.ci/run`
installs it), because a skipped browser test would pass without having run.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse
from playwright.async_api import BrowserContext, Page, async_playwright, expect

from dealflow_common.auth import mint_token
from dealflow_common.runtime.broker import free_port
from dealflow_common.runtime.embedded import service_urls
from dealflow_common.testing import new_schema_name

pytestmark = [pytest.mark.integration, pytest.mark.timeout(420)]

ROOT = Path(__file__).resolve().parents[2]
AXE = Path(__file__).parent / "vendor" / "axe-core" / "axe.min.js"
ARTEFACTS = Path(os.environ.get("DEALFLOW_TEST_ARTEFACTS", ROOT / "test-results")) / "console"
CHROMIUM = os.environ.get("DEALFLOW_CHROMIUM", "/usr/bin/chromium")
# The closed network refuses background connections: Chromium must not try any.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT_MS = 30_000
# The services work on events and the test machine is loaded: wait as long for what the
# user waits to see as for an action.
expect.set_options(timeout=WAIT_MS)


@pytest.fixture(scope="module")
def chromium() -> str:
    if not Path(CHROMIUM).exists():
        pytest.fail(
            f"no Chromium at {CHROMIUM}: install Debian's chromium and chromium-driver "
            f"(`make test` does) or point DEALFLOW_CHROMIUM at one"
        )
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    return CHROMIUM


@pytest.fixture(scope="module")
async def browser(
    chromium: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[BrowserContext]:
    async with async_playwright() as playwright:
        context = await playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),  # a fresh --user-data-dir
            executable_path=chromium,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900},
        )
        try:
            yield context
        finally:
            await context.close()


class Console:
    """One browser tab signed in as one user, with the checks every page gets."""

    def __init__(self, page: Page, url: str) -> None:
        self.page = page
        self.url = url
        self.problems: list[str] = []
        page.set_default_timeout(WAIT_MS)
        page.on("pageerror", lambda error: self.problems.append(f"page error: {error}"))
        page.on("console", self._console_message)

    def _console_message(self, message: Any) -> None:
        # Chrome logs every 4xx answer as "Failed to load resource"; the app shows those.
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            self.problems.append(f"console error: {message.text}")

    async def sign_in(self, who: str) -> None:
        await self.page.goto(self.url)
        await self.page.get_by_role("button", name=re.compile(f"^Sign in as {who}")).click()
        await expect(self.page.get_by_text(re.compile("^Signed in as"))).to_be_visible()

    async def check(self, name: str) -> None:
        """axe-core on the page as it is, a screenshot, and no token in the address."""
        page = self.page
        if not await page.evaluate("typeof axe !== 'undefined'"):
            await page.evaluate(AXE.read_text(encoding="utf-8") + "\n;0")
        results = await page.evaluate(
            "axe.run(document, {resultTypes: ['violations']}).then(r => r.violations.map("
            "v => ({id: v.id, impact: v.impact, help: v.help,"
            " nodes: v.nodes.slice(0, 3).map(n => n.target.join(' '))})))"
        )
        serious = [v for v in results if v["impact"] in {"serious", "critical"}]
        await page.screenshot(path=str(ARTEFACTS / f"{name}.png"), full_page=True)
        assert not serious, f"{name}: axe-core finds {json.dumps(serious, indent=1)}"
        assert "eyJ" not in page.url, f"{name}: a token is in the address {page.url}"
        assert not self.problems, f"{name}: {self.problems}"

    async def fits_the_width(self, name: str) -> None:
        overflow = await self.page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, f"{name}: the page is {overflow}px wider than the screen"

    async def token(self) -> str:
        session = await self.page.evaluate("sessionStorage.getItem('dealflow.session')")
        return str(json.loads(session)["token"])

    def column(self, stage: str) -> Any:
        return self.page.locator(f'section.column[data-stage="{stage}"]')

    def card(self, title: str, stage: str | None = None) -> Any:
        scope = self.column(stage) if stage else self.page
        return scope.locator(f'article.card[aria-label="{title}"]')

    async def open_tab(self, deal_id: str, tab: str) -> None:
        await self.page.goto(f"{self.url}/#/deal/{deal_id}/{tab}")
        await expect(self.page.locator(f"#tab-{tab}[aria-current=page]")).to_be_visible()

    async def until_visible(self, locator: Any, reload: Callable[[], Any], tries: int = 30) -> None:
        """The services work on events: reload until what the user waits for appears."""
        for _ in range(tries):
            if await locator.count():
                return
            await self.page.wait_for_timeout(1000)
            await reload()
        await expect(locator).to_be_visible()


@pytest.fixture
async def console(stack: Any, browser: BrowserContext) -> AsyncIterator[Callable[[], Any]]:
    pages: list[Page] = []

    async def open_console() -> Console:
        page = await browser.new_page()  # a tab of its own: its own sessionStorage
        pages.append(page)
        return Console(page, stack.services["console"].url)

    yield open_console
    for page in pages:
        await page.close()


@pytest.fixture(scope="module")
def deal_title() -> str:
    return f"Console fleet {uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def shared() -> dict[str, str]:
    """What the first test made, for the next ones (they run in file order)."""
    return {}


async def test_a_rep_works_a_deal_from_lead_to_a_paid_order(
    console: Callable[[], Any], deal_title: str, shared: dict[str, str], stack: Any
) -> None:
    ana = await console()
    page = ana.page
    await page.goto(ana.url)
    await expect(page.get_by_role("heading", name="Sign in to Dealflow")).to_be_visible()
    # How long the app took to load, kept beside the screenshots (speed is measured, not
    # asserted: a loaded test machine says nothing about it).
    load = await page.evaluate(
        "(() => { const n = performance.getEntriesByType('navigation')[0];"
        " return {dom_content_loaded_ms: n.domContentLoadedEventEnd, load_ms: n.loadEventEnd,"
        " transferred_bytes: performance.getEntriesByType('resource')"
        ".reduce((t, r) => t + r.transferSize, n.transferSize)}; })()"
    )
    (ARTEFACTS / "load-timing.json").write_text(json.dumps(load, indent=1), encoding="utf-8")
    await ana.check("sign-in")
    await ana.sign_in("Ana")
    await expect(page.get_by_role("heading", name="Pipeline", exact=True)).to_be_visible()

    # A new deal lands in Lead.
    await page.get_by_text("New deal", exact=True).click()
    form = page.get_by_role("form", name="New deal")
    await form.get_by_label("Title").fill(deal_title)
    await form.get_by_label("Customer").fill("Console Test Corp")
    await form.get_by_label("Value").fill("12000.00")
    await form.get_by_label("Expected close").fill("2099-03-15")
    await form.get_by_label("Team").fill("team-1")
    # Clicked twice before the first answer: both submissions carry the form's
    # Idempotency-Key, so one deal is opened.
    await form.get_by_role("button", name="Create deal").dblclick()
    await expect(ana.card(deal_title, "lead")).to_be_visible()
    async with stack.client("opportunity", await ana.token()) as c:
        listed = (await c.get("/opportunities", params={"customer": "console-test-corp"})).json()
    assert [d["title"] for d in listed["items"]].count(deal_title) == 1
    await expect(ana.column("lead").get_by_role("heading")).to_contain_text("Lead (")
    # The open stages' figures and the forecast come from the reporting service.
    await expect(page.get_by_text(re.compile("from the reporting service"))).to_be_visible()
    await ana.until_visible(
        page.get_by_role("table", name=re.compile("^Weighted forecast against won")).filter(
            has_text="2099-Q1"
        ),
        lambda: page.get_by_role("button", name="Apply filters").click(),
    )
    await ana.check("board")

    # Dragged to Qualification.
    await ana.card(deal_title, "lead").drag_to(ana.column("qualification"))
    await expect(ana.card(deal_title, "qualification")).to_be_visible()
    # A forbidden move is refused as the API words it, with the moves allowed.
    await ana.card(deal_title, "qualification").drag_to(ana.column("closed_won"))
    alert = page.get_by_role("alert")
    await expect(alert).to_contain_text("cannot move to closed_won")
    await expect(alert).to_contain_text("Allowed moves: lead, proposal, closed_lost")
    await expect(ana.card(deal_title, "qualification")).to_be_visible()
    await ana.check("board-refused")
    # The keyboard way: the card's own menu.
    menu = page.get_by_label(f"Move {deal_title} to stage")
    await menu.focus()
    await menu.select_option("proposal")
    await page.keyboard.press("Tab")
    await page.keyboard.press("Enter")
    await expect(ana.card(deal_title, "proposal")).to_be_visible()
    await ana.card(deal_title, "proposal").drag_to(ana.column("negotiation"))
    await expect(ana.card(deal_title, "negotiation")).to_be_visible()

    # A narrow screen: one column under the other, nothing wider than the phone.
    await page.set_viewport_size({"width": 390, "height": 844})
    await ana.fits_the_width("board-narrow")
    await ana.check("board-narrow")
    await page.set_viewport_size({"width": 1280, "height": 900})

    await ana.card(deal_title, "negotiation").get_by_role("link", name=deal_title).click()
    await expect(page.get_by_role("heading", name="General")).to_be_visible()
    deal_id = page.url.split("/#/deal/")[1].split("/")[0]
    shared["deal_id"] = deal_id
    await expect(page.locator("dl.facts")).to_contain_text("Negotiation")
    await ana.check("deal-general")

    # A quote: added, presented, accepted; the deal is won and the order appears.
    await ana.open_tab(deal_id, "quotes")
    await page.get_by_role("button", name="Add quote").dblclick()  # one quote all the same
    await expect(page.get_by_role("heading", name="Quote 1: draft")).to_be_visible()
    async with stack.client("quote", await ana.token()) as c:
        drafted = (await c.get("/quotes", params={"opportunity_id": deal_id})).json()
    assert len(drafted) == 1, drafted
    await page.get_by_role("button", name="Present quote 1").click()
    await expect(page.get_by_role("heading", name="Quote 1: presented")).to_be_visible()
    await page.get_by_role("button", name="Buy-now link for quote 1").click()
    await expect(page.get_by_role("link", name=re.compile("buy-now"))).to_be_visible()
    await ana.check("deal-quotes")
    await page.get_by_role("button", name="Accept quote 1").click()
    await expect(page.get_by_role("status")).to_contain_text("Acceptance requested")
    await ana.until_visible(
        page.get_by_role("heading", name="Quote 1: accepted"), lambda: page.reload()
    )

    await ana.open_tab(deal_id, "orders")
    await ana.until_visible(page.get_by_role("heading", name="Order: open"), lambda: page.reload())
    await ana.check("deal-orders")
    await page.get_by_role("button", name="Record payment").click()
    await expect(page.get_by_role("heading", name="Order: paid")).to_be_visible()
    await expect(page.get_by_role("table", name="Ledger")).to_contain_text("payment")
    await page.get_by_role("button", name="Issue invoice").click()
    await page.get_by_role("button", name="Get the invoice PDF").click()
    download = page.get_by_role("link", name="Download the invoice PDF")
    async with page.expect_download() as pdf:
        await download.click()
    saved = ARTEFACTS / "invoice.pdf"
    await (await pdf.value).save_as(saved)
    assert saved.read_bytes().startswith(b"%PDF")
    await ana.check("deal-orders-paid")

    await ana.open_tab(deal_id, "general")
    await expect(page.locator("dl.facts")).to_contain_text("Won")

    # The other tabs, each checked and photographed.
    await ana.open_tab(deal_id, "history")
    history = page.get_by_role("table", name="Sales history")
    for stage in ("Qualification", "Proposal", "Negotiation", "Won"):
        await expect(history).to_contain_text(stage)
    await ana.check("deal-history")
    await ana.open_tab(deal_id, "tasks")
    await page.get_by_label("Note", exact=True).fill("Customer paid on the spot")
    await page.get_by_role("button", name="Add note").click()
    await expect(page.get_by_role("table", name="Notes")).to_contain_text(
        "Customer paid on the spot"
    )
    await ana.check("deal-tasks")
    await ana.open_tab(deal_id, "sequences")
    await ana.check("deal-sequences")
    await ana.open_tab(deal_id, "activity")
    await expect(page.get_by_role("list")).to_contain_text("the order is paid")
    await expect(page.get_by_role("list")).to_contain_text("Note (general) by ana")
    await ana.check("deal-activity")

    # The token never reached a log line.
    token = await ana.token()
    for log in stack.log_dir.glob("*.log"):
        assert token not in log.read_text(encoding="utf-8"), f"{log.name} holds the token"


async def test_a_rep_of_another_team_sees_the_deal_only_while_it_is_shared(
    console: Callable[[], Any], deal_title: str, shared: dict[str, str]
) -> None:
    assert shared.get("deal_id"), "the first test made no deal"
    ben = await console()
    await ben.sign_in("Ben")
    await expect(ben.page.get_by_role("heading", name="Pipeline", exact=True)).to_be_visible()
    await ben.page.get_by_label("Text").fill(deal_title)
    await ben.page.get_by_role("button", name="Apply filters").click()
    await expect(ben.page.get_by_text("0 deals.")).to_be_visible()
    await expect(ben.card(deal_title)).to_have_count(0)
    deal_url = f"{ben.url}/#/deal/{shared['deal_id']}/general"
    await ben.page.goto(deal_url)
    await expect(ben.page.get_by_role("alert")).to_contain_text("does not exist")
    await ben.check("other-team")

    # Until Ana shares it with him on the Sharing tab.
    ana = await console()
    await ana.sign_in("Ana")
    await ana.open_tab(shared["deal_id"], "sharing")
    form = ana.page.get_by_role("form", name="Share the deal")
    await form.get_by_label("User or team id").fill("ben")
    await form.get_by_role("button", name="Share").click()
    await expect(ana.page.get_by_role("table", name="Shares")).to_contain_text("ben")
    await ana.check("deal-sharing")
    await ben.page.reload()
    await expect(ben.page.get_by_role("heading", name="General")).to_be_visible()
    await ana.page.get_by_role("button", name="Revoke user ben").click()
    await expect(ana.page.get_by_role("status")).to_contain_text("revoked")
    await ben.page.reload()
    await expect(ben.page.get_by_role("alert")).to_contain_text("does not exist")


async def test_a_rep_fills_custom_fields_and_moves_deals_in_bulk(
    console: Callable[[], Any], stack: Any, token: Callable[..., str]
) -> None:
    """Custom fields are the session's (every test's deals): the ones defined here are
    retired at the end, so the required one refuses no other test's new deal."""
    run = uuid.uuid4().hex[:8]
    # A word the search keeps whole: letters only.
    word = "".join(chr(ord("a") + int(c, 16)) for c in run)
    tier, budget, signed, champion = (f"{k}_{run}" for k in ("tier", "budget", "signed", "champ"))
    async with stack.client("opportunity", token("ana", roles=("rep",), teams=("team-1",))) as c:
        deals = []
        for n in ("one", "two"):
            made = await c.post(
                "/opportunities",
                json={
                    "title": f"Bulk {word} {n}",
                    "customer": {"kind": "organization", "id": f"c-{run}", "name": "Bulk Corp"},
                    "value": {"amount": "900.00", "currency": "USD"},
                    "team_id": "team-1",
                },
            )
            assert made.status_code == 201, made.text
            deals.append(made.json())
        # One deal a stage ahead: a bulk move to proposal suits it and is refused the other.
        moved = await c.post(
            f"/opportunities/{deals[1]['id']}/stage", json={"stage": "qualification"}
        )
        assert moved.status_code == 200, moved.text
    deal_id = deals[0]["id"]
    admin = stack.client("opportunity", token("root", roles=("admin",)))
    async with admin:
        for body in (
            # Required after the deals were opened: they lack it until someone fills it.
            {
                "key": tier,
                "label": f"Tier {run}",
                "type": "choice",
                "choices": ["gold", "silver"],
                "required": True,
                "tab": "Account",
            },
            {"key": budget, "label": f"Budget {run}", "type": "money"},
            {"key": signed, "label": f"Signed {run}", "type": "date"},
        ):
            defined = await admin.post("/custom-fields", json=body)
            assert defined.status_code == 201, defined.text
    try:
        # An admin adds one more on the tab itself.
        root = await console()
        await root.sign_in("Root")
        await root.open_tab(deal_id, "custom")
        define = root.page.get_by_role("form", name="Define a custom field")
        await define.get_by_label("Key").fill(champion)
        await define.get_by_label("Label", exact=True).fill(f"Champion {run}")
        await define.get_by_label("Tab label").fill("Account")
        await define.get_by_role("button", name="Define field").click()
        await expect(root.page.get_by_role("status")).to_contain_text("defined for every deal")
        values = root.page.get_by_role("form", name="Custom fields")
        await expect(values.get_by_label(f"Champion {run}")).to_be_visible()
        await root.check("deal-custom-admin")

        ana = await console()
        page = ana.page
        await ana.sign_in("Ana")
        await ana.open_tab(deal_id, "custom")
        form = page.get_by_role("form", name="Custom fields")
        account = form.get_by_role("group", name="Account")
        await expect(account.get_by_label(f"Tier {run} (required)")).to_have_value("")
        await expect(form.get_by_label(f"Budget {run}: currency")).to_have_value("USD")
        await account.get_by_label(f"Tier {run} (required)").select_option("gold")
        await account.get_by_label(f"Champion {run}").fill("Dana Lee")
        await form.get_by_label(f"Budget {run}: amount").fill("1200.5")
        await form.get_by_label(f"Budget {run}: currency").fill("EUR")
        await form.get_by_label(f"Signed {run}").fill("2027-01-31")
        await form.get_by_role("button", name="Save custom fields").click()
        await expect(page.get_by_role("status")).to_contain_text(f"Saved: Tier {run}")
        await ana.check("deal-custom")

        # Saved: the page read again shows the values as the service keeps them.
        await page.reload()
        await expect(form.get_by_label(f"Tier {run} (required)")).to_have_value("gold")
        await expect(form.get_by_label(f"Champion {run}")).to_have_value("Dana Lee")
        await expect(form.get_by_label(f"Budget {run}: amount")).to_have_value("1200.50")
        await expect(form.get_by_label(f"Budget {run}: currency")).to_have_value("EUR")
        await expect(form.get_by_label(f"Signed {run}")).to_have_value("2027-01-31")

        # A bad value is refused as the API words it, beside the field it names.
        amount = form.get_by_label(f"Budget {run}: amount")
        await amount.fill("12.345")
        await form.get_by_role("button", name="Save custom fields").click()
        await expect(page.get_by_role("alert")).to_contain_text(f"custom_fields.{budget}")
        await expect(page.locator(f"#cf-{budget}-error")).to_contain_text("expected money")
        await expect(amount).to_have_attribute("aria-invalid", "true")
        await ana.check("deal-custom-refused")
        async with stack.client("opportunity", await ana.token()) as c:
            kept = (await c.get(f"/opportunities/{deal_id}")).json()["custom_fields"]
        assert kept == {
            tier: "gold",
            champion: "Dana Lee",
            budget: {"amount": "1200.50", "currency": "EUR"},
            signed: "2027-01-31",
        }

        # Bulk work on the board: one call to the bulk API, an outcome per deal.
        await page.goto(f"{ana.url}/#/board")
        await page.get_by_label("Text").fill(word)
        await page.get_by_role("button", name="Apply filters").click()
        await expect(page.get_by_text("2 deals.")).to_be_visible()
        for deal in deals:
            await page.get_by_label(f"Select {deal['title']}").check()
        await page.get_by_label("Stage for the selected deals").select_option("proposal")
        posts: list[str] = []
        page.on("request", lambda r: posts.append(r.url) if r.method == "POST" else None)
        async with page.expect_response("**/api/opportunity/opportunities/bulk/stage") as bulk:
            await page.get_by_role("button", name="Move selected").click()
        assert (await bulk.value).status == 200
        outcome = page.get_by_role("list", name="Outcome per deal of the last bulk change")
        await expect(outcome).to_contain_text(f"{deals[1]['title']}: changed")
        await expect(outcome).to_contain_text(
            f"{deals[0]['title']}: refused: Transition not allowed"
        )
        await expect(outcome).to_contain_text("cannot move to proposal")
        await expect(page.get_by_role("alert")).to_contain_text(
            "Move to Proposal: 1 changed, 0 unchanged, 1 refused, 0 not found."
        )
        await expect(ana.card(deals[1]["title"], "proposal")).to_be_visible()
        await expect(ana.card(deals[0]["title"], "lead")).to_be_visible()
        await ana.check("board-bulk")

        await page.get_by_label("Owner to add to the selected deals").fill("mia")
        await page.get_by_role("button", name="Assign selected").click()
        await expect(page.get_by_role("status")).to_contain_text(
            "Assign to mia: 2 changed, 0 unchanged, 0 refused, 0 not found."
        )
        await expect(ana.card(deals[0]["title"])).to_contain_text("owners: ana, mia")
        assert [url.split("/api/")[1] for url in posts] == [
            "opportunity/opportunities/bulk/stage",
            "opportunity/opportunities/bulk/assign",
        ], "one call per bulk change, not one per deal"
    finally:
        async with stack.client("opportunity", token("root", roles=("admin",))) as admin:
            for key in (tier, budget, signed, champion):
                await admin.patch(f"/custom-fields/{key}", json={"retired": True})


async def test_an_operator_dry_runs_and_runs_the_purge(
    console: Callable[[], Any], stack: Any, token: Callable[..., str], shared: dict[str, str]
) -> None:
    assert shared.get("deal_id"), "the first test made no deal"
    deal_id = shared["deal_id"]
    async with stack.client("purge", token("root", roles=("admin",))) as admin:
        policy = (await admin.get("/purge/policy")).json()
    try:
        olga = await console()
        page = olga.page
        await olga.sign_in("Olga")
        await expect(page.get_by_role("heading", name="Purge agent")).to_be_visible()
        await expect(page.get_by_role("heading", name="Status")).to_be_visible()
        await olga.check("purge")

        # Purge closed deals at once (the services run on a real clock).
        form = page.get_by_role("form", name="Purge policy")
        await form.get_by_label("Keep won deals (days)").fill("0")
        await form.get_by_label("Keep lost deals (days)").fill("0")
        await form.get_by_role("button", name="Save policy").click()
        await expect(page.get_by_role("status")).to_contain_text("Policy saved.")

        await page.get_by_role("button", name="Pause the agent").click()
        await expect(page.get_by_role("button", name="Resume the agent")).to_be_visible()
        await page.get_by_role("button", name="Resume the agent").click()
        await expect(page.get_by_role("button", name="Pause the agent")).to_be_visible()

        await page.get_by_role("button", name="Dry run").click()
        await expect(page.get_by_role("status")).to_contain_text(
            re.compile("Dry run succeeded"), timeout=60_000
        )
        items = page.locator("section[aria-labelledby=items-h] table")
        await expect(items.locator("tr", has_text=deal_id)).to_contain_text("would purge")
        await olga.check("purge-dry-run")

        await page.get_by_role("button", name="Run now").click()
        await expect(page.get_by_role("status")).to_contain_text(
            re.compile("Run succeeded"), timeout=120_000
        )
        await expect(items.locator("tr", has_text=deal_id)).to_contain_text("purged")
        # However quickly the run ended, the dashboard shows it as the latest run: a full
        # bar, its counts beside it.
        await expect(page.get_by_role("heading", name="Latest run: run succeeded")).to_be_visible()
        bar = page.get_by_role("progressbar", name=re.compile("^Progress: finished"))
        examined = await bar.get_attribute("aria-valuemax")
        assert examined is not None
        assert int(examined) >= 1
        await expect(bar).to_have_attribute("aria-valuenow", examined)
        await expect(bar).to_have_attribute(
            "aria-valuetext", f"finished, deals examined: {examined}"
        )
        await olga.check("purge-run")
    finally:
        async with stack.client("purge", token("root", roles=("admin",))) as admin:
            policy.pop("version")
            await admin.put("/purge/policy", json=policy)

    async with stack.client("opportunity", token("ana", roles=("rep",), teams=("team-1",))) as c:
        gone = await c.get(f"/opportunities/{deal_id}")
    assert gone.status_code == 404


async def test_the_console_forwards_only_to_its_services(stack: Any) -> None:
    async with httpx.AsyncClient(base_url=stack.services["console"].url) as client:
        unknown = await client.get("/api/elsewhere/anything")
        without_token = await client.get("/api/opportunity/opportunities")
    assert unknown.status_code == 404
    assert unknown.headers["content-type"].startswith("application/problem+json")
    assert without_token.status_code == 401, "the token is the services' to check"


def fake_identity_provider(secret: str, seen: dict[str, Any]) -> FastAPI:
    """An OpenID Connect provider reduced to the authorization-code flow with PKCE: it
    signs everyone in as Ivy (rep, team-1), and gives a token only to the verifier whose
    S256 challenge came with the code."""
    app = FastAPI()
    codes: dict[str, dict[str, str]] = {}
    cors = {"Access-Control-Allow-Origin": "*"}

    @app.get("/.well-known/openid-configuration")
    async def discovery(request: Request) -> JSONResponse:
        base = str(request.base_url).rstrip("/")
        return JSONResponse(
            {
                "issuer": base,
                "authorization_endpoint": f"{base}/authorize",
                "token_endpoint": f"{base}/token",
            },
            headers=cors,
        )

    @app.get("/authorize")
    async def authorize(request: Request) -> RedirectResponse:
        asked = dict(request.query_params)
        seen["authorize"] = asked
        code = uuid.uuid4().hex
        codes[code] = asked
        return RedirectResponse(f"{asked['redirect_uri']}?code={code}&state={asked['state']}")

    @app.post("/token")
    async def token(request: Request) -> JSONResponse:
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode()).items()}
        asked = codes.pop(form.get("code", ""), None)
        verifier = form.get("code_verifier", "")
        challenge = (
            base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
            .rstrip(b"=")
            .decode()
        )
        if (
            asked is None
            or challenge != asked["code_challenge"]
            or form.get("redirect_uri") != asked["redirect_uri"]
            or form.get("client_id") != asked["client_id"]
        ):
            return JSONResponse({"error": "invalid_grant"}, status_code=400, headers=cors)
        seen["token"] = form
        access = mint_token(
            secret, sub="ivy", roles=["rep"], teams=["team-1"], now=int(time.time())
        )
        return JSONResponse({"access_token": access, "token_type": "Bearer"}, headers=cors)

    return app


async def test_with_an_identity_provider_people_sign_in_with_pkce(
    stack: Any, browser: BrowserContext, jwt_secret: str, schemas: list[str]
) -> None:
    seen: dict[str, Any] = {}
    port = free_port()
    provider = uvicorn.Server(
        uvicorn.Config(
            fake_identity_provider(jwt_secret, seen),
            host="127.0.0.1",
            port=port,
            log_config=None,
            access_log=False,
        )
    )
    serving = asyncio.create_task(provider.serve())
    schema = new_schema_name("console")
    schemas.append(schema)
    console_process = stack.service_process("console", schema=schema)
    console_process.env.update(service_urls(stack.services.values()))
    console_process.env.update(
        {
            "DEALFLOW_CONSOLE_DEV_SIGN_IN": "false",
            "DEALFLOW_CONSOLE_OIDC_ISSUER": f"http://127.0.0.1:{port}",
            "DEALFLOW_CONSOLE_OIDC_CLIENT_ID": "dealflow-console",
        }
    )
    page = await browser.new_page()
    try:
        await console_process.start()
        await console_process.wait_ready(timeout=90)
        ivy = Console(page, console_process.url)
        await page.goto(ivy.url)
        await expect(page.get_by_role("heading", name="Development users")).to_have_count(0)
        await page.get_by_role("button", name="Sign in with your company account").click()
        await expect(page.get_by_text("Signed in as ivy (rep)")).to_be_visible()
        await expect(page.get_by_role("heading", name="Pipeline", exact=True)).to_be_visible()
        asked = seen["authorize"]
        assert asked["code_challenge_method"] == "S256"
        assert asked["client_id"] == "dealflow-console"
        assert asked["redirect_uri"] == f"{ivy.url}/"
        assert seen["token"]["grant_type"] == "authorization_code"
        # The code left the address bar; the verifier left the tab's storage.
        assert "code=" not in page.url
        assert await page.evaluate("sessionStorage.getItem('dealflow.pkce')") is None
        await ivy.check("oidc-signed-in")
    finally:
        await page.close()
        await console_process.stop()
        provider.should_exit = True
        await serving
