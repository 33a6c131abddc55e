"""The console in a real headless Chromium (Debian's, driven by Playwright) against the session's real
service and worker: sign in with a key, teach a document and watch its job publish, ask it and see the
streamed answer and its route, forget it and roll it back, and a tenant that never sees another
tenant's knowledge bases. Screenshots are kept in test-artifacts/console/ (the README shows two)."""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import KEYS, REPO

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = REPO / "test-artifacts" / "console"
KB = "console-kb"
TITLE = "Dravenholm Library"
TEXT = "The Dravenholm Library holds 81,000 maps. It was founded by Mirela Ostrav."
PROBES = "Who founded the Dravenholm Library? | Mirela Ostrav\nHow many maps does the Dravenholm Library hold? | 81,000"
QUESTION = "Who founded the Dravenholm Library?"


@pytest.fixture(scope="module")
def browser() -> Iterator:
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), "Chromium is missing: make test installs it (scripts/browser.sh)"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


def signed_in(browser, stack, who: str):  # noqa: ANN001, ANN201
    """A fresh tab (its own session storage) that signed in with `who`'s key."""
    page = browser.new_context(viewport={"width": 1200, "height": 900}).new_page()
    page.on("dialog", lambda dialog: dialog.accept())  # the confirmations of rollback and forget
    page.goto(stack.url + "/console")
    page.locator("#key-input").fill(KEYS[who][0])
    page.locator("#key-form button[type=submit]").click()
    page.locator("#kb-list").wait_for()
    return page


def shot(page, name: str) -> None:  # noqa: ANN001
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_teach_watch_ask_forget_and_roll_back(browser, stack, workers) -> None:  # noqa: ANN001
    page = signed_in(browser, stack, "acme")
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))

    # Teach: a new knowledge base, the document pasted, probes added.
    page.locator("nav a[data-nav=teach]").click()
    page.locator("#teach-kb").select_option("")
    page.locator("#teach-new").fill(KB)
    page.locator("#teach-title").fill(TITLE)
    page.locator("#teach-text").fill(TEXT)
    page.locator("#teach-probes").fill(PROBES)
    page.locator("#teach-submit").click()
    page.wait_for_url(re.compile(r".*#/job/[0-9a-f-]+$"))
    job_id = page.url.rsplit("/", 1)[1]

    # The job's progress moves and its events stream in, until it publishes.
    seen: set[str] = set()
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        seen.add(page.locator("#job-progress").get_attribute("value") or "")
        status = page.locator("#job-status").inner_text()
        if status in ("published", "rejected", "failed", "cancelled"):
            break
        time.sleep(0.5)
    assert status == "published", page.locator("#job-outcome").inner_text()
    assert len({v for v in seen if v not in ("", "0", "1")}) >= 1 and len(seen) >= 3, seen  # it moved on the way
    page.locator("#job-outcome").get_by_text(f"Published {KB} v1").wait_for()
    page.locator("#job-events li", has_text=re.compile(rf"published \S*{KB}@v1")).wait_for()  # the stream's last event
    assert page.locator("#job-events li").count() >= 5
    shot(page, "job")

    # Ask: the answer streams in, and says what answered it (the document's shard, or reading it).
    page.locator("#job-outcome a", has_text="Ask it").click()
    page.locator("#ask-question").fill(QUESTION)
    page.locator("#ask-form button[type=submit]").click()
    route = page.locator("#ask-route-header")
    route.wait_for(timeout=60_000)
    assert re.fullmatch(rf"seal-route: ({KB}/s\d+@v1|context:\d+)", route.inner_text()), route.inner_text()
    page.locator("#ask-form button[type=submit]:not([disabled])").wait_for()  # the stream has ended
    assert page.locator("#ask-answer").inner_text().strip()
    shot(page, "ask")

    # The knowledge base: its document learned, the gate report, the retention plot.
    page.goto(f"{stack.url}/console#/kb/{KB}")
    row = page.locator("#documents tbody tr").first
    row.get_by_text("learned").wait_for()
    assert TITLE in row.inner_text()
    assert page.locator("#retention svg circle").count() >= 1
    report = page.locator(f"details.gate[data-job='{job_id}']")
    report.locator("> summary").click()
    report.locator("details > summary", has_text="Probes").click()  # the probes, before and after
    report.get_by_text("Mirela Ostrav").first.wait_for()
    shot(page, "knowledge-base")

    # Forget it (a new version without its shard), then roll back to the version that learned it.
    row.get_by_role("button", name="Forget").click()
    page.locator("#versions tr[data-version='2']").get_by_text("serving").wait_for()
    assert page.locator("#documents tbody tr").first.inner_text().strip() == "none yet"
    page.locator("#versions tr[data-version='1'] button.rollback").click()
    page.locator("#versions tr[data-version='1']").get_by_text("serving").wait_for()
    page.locator("#documents tbody tr").first.get_by_text("learned").wait_for()
    with stack.client("acme") as client:
        assert client.get(f"/v1/adapters/{KB}").json()["current_version"] == 1
    assert not errors, errors


def test_a_tenant_sees_only_its_own_knowledge_bases(browser, stack) -> None:  # noqa: ANN001
    hostile = '<img src=x onerror="document.title=1">Ferry <b>notes</b>'
    with stack.client("acme") as client:  # acme owns a knowledge base (the first test makes one too)
        r = client.post("/v1/learn", json={"adapter": "console-acme-only", "documents": [{"title": hostile, "text": TEXT}]})
        assert r.status_code == 202, r.text
    try:
        page = signed_in(browser, stack, "globex")
        names = page.locator("#kb-list tbody tr").all_inner_texts()
        assert not any("console-acme-only" in n for n in names), names
        page.goto(f"{stack.url}/console#/kb/console-acme-only")
        page.locator("main .error").get_by_text("does not exist").wait_for()
        page.goto(f"{stack.url}/console#/operations")
        page.locator("#operations").wait_for()
        assert page.locator("#ops-workers").count() == 0  # the shared queue is the operators' to see

        # A key that may only ask sees its tenant's knowledge base (not its jobs); a title is text, never markup.
        reader = signed_in(browser, stack, "acme-reader")
        reader.goto(f"{stack.url}/console#/kb/console-acme-only")
        row = reader.locator("#documents tbody tr").first
        row.get_by_text(hostile, exact=True).wait_for()
        assert reader.locator("main img, main b").count() == 0 and reader.title() == "SEAL console"

        admin = signed_in(browser, stack, "admin")
        owned = admin.locator("#kb-list tr[data-kb$='console-acme-only']")  # admins see every tenant's, with its owner
        owned.get_by_text("acme", exact=True).wait_for()
        admin.goto(f"{stack.url}/console#/operations")
        admin.locator("#ops-workers").wait_for()
        shot(admin, "operations")
    finally:
        with stack.client("acme") as client:
            client.post(f"/v1/learn/{r.json()['id']}/cancel")


def test_the_console_asks_for_a_key_and_works_offline(browser, stack) -> None:  # noqa: ANN001
    page = browser.new_context().new_page()
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.goto(stack.url + "/console")
    page.locator("#key-dialog[open]").wait_for()  # keys are configured: it asks for one before showing data
    page.locator("#key-input").fill("sk-wrong")
    page.locator("#key-form button[type=submit]").click()
    page.locator("#key-dialog[open] #key-error").get_by_text("needs an API key").wait_for()
    assert all(url.startswith(stack.url) for url in requested), requested  # no CDN: everything from the API
    response = page.request.get(stack.url + "/console")
    assert "script-src 'self'" in response.headers["content-security-policy"]
