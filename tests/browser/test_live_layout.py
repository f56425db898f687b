"""Issue 16, the tracker and the live corner: long texts, actions in reach, never over the page.

One user and one browser context for the module. Jobs beyond the one real demo are added to what the
browser hears from the server (the job list answered through ``context.route``): the layout is what
is under test, and a user may run only one demo at a time.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import inject_message, new_user, screenshot, tracker_job, wait_ready

WIDTHS = {"wide": {"width": 1280, "height": 800}, "phone": {"width": 390, "height": 844}}
OPERATIONS = Path(__file__).parents[2] / "epm" / "operations"
# What a floating element must never cover: the navigation and the page's own actions.
GUARDED = "nav.nav, main .button.primary, main .jobs-table button, main section.operation button[data-start]"


def longest_stage_messages() -> dict[str, str]:
    """The longest literal stage message of each operation module (what ``ctx.stage``/``on_stage`` report)."""
    found = {}
    for path in sorted(OPERATIONS.glob("*.py")):
        messages = re.findall(r'(?:stage|on_stage|\(\d+, )\(?\s*[^,()]*,\s*"([^"{}]{12,})"', path.read_text())
        if messages:
            found[path.stem] = max(messages, key=len)
    return found


@pytest.fixture(scope="module")
def person(browser, live_server):
    user = new_user(browser, live_server)
    yield user
    user.context.close()


@pytest.fixture(scope="module")
def session(person):
    return person.create_session(name="Regional expansion of the meal-kit business into three new markets")


@pytest.fixture(scope="module")
def demo(person):
    job = person.start_demo(steps=100, step_seconds=30)
    yield job
    person.cancel(job["id"])


def fake_jobs(count: int, session_id: int) -> list[dict]:
    """Running jobs as the API sends them, for the browser's list (the route below)."""
    now = datetime.now(UTC)
    jobs = []
    for number in range(count):
        started = (now - timedelta(seconds=30 + number)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        jobs.append({"id": f"layout{uuid.uuid4().hex[:20]}", "job_type": "bmc_analysis", "user_id": "",
                     "title": "Business model canvas", "status": "running", "progress": 10 + number * 9,
                     "message": "Identifying key activities, resources and partners", "session_id": str(session_id),
                     "seq": int(now.timestamp() * 1000), "created_at": started, "started_at": started,
                     "updated_at": started, "completed_at": None, "error_code": None, "error": None,
                     "result": None, "retry_of": None, "cancel_requested": False, "terminal": False})
    return jobs


def serve_extra_jobs(context, extra: list[dict]) -> None:
    """Answer the job list with the server's jobs plus ``extra`` (and each extra job by its id)."""
    context.unroute_all(behavior="ignoreErrors")
    by_id = {job["id"]: job for job in extra}

    def handle(route):
        path = route.request.url.split("?")[0]
        job_id = path.rsplit("/", 1)[-1]
        if job_id in by_id:
            route.fulfill(status=200, content_type="application/json", body=json.dumps({"job": by_id[job_id]}))
            return
        if path.endswith("/api/background-jobs") and route.request.method == "GET":
            response = route.fetch(headers={k: v for k, v in route.request.headers.items()
                                            if k.lower() != "if-none-match"})
            body = response.json()
            body["jobs"] = extra + body["jobs"]
            route.fulfill(status=200, content_type="application/json", body=json.dumps(body))
            return
        route.continue_()

    context.route("**/api/background-jobs*", handle)


def overlaps(a: dict, b: dict) -> bool:
    return a["x"] < b["x"] + b["width"] and b["x"] < a["x"] + a["width"] and \
        a["y"] < b["y"] + b["height"] and b["y"] < a["y"] + a["height"]


def boxes(page, selector: str) -> list[tuple[str, dict]]:
    return page.evaluate("""(selector) => [...document.querySelectorAll(selector)]
        .filter((node) => node.offsetParent !== null)
        .map((node) => { const r = node.getBoundingClientRect();
          return [node.textContent.trim().slice(0, 40), {x: r.x, y: r.y, width: r.width, height: r.height}]; })
        .filter(([, box]) => box.width > 0 && box.height > 0)""", selector)


def show_message(job_store, job_id: str, shown, message: str) -> None:
    """Write ``message`` as the job's progress, again if the demo's next step overwrote it meanwhile."""
    for _ in range(3):
        inject_message(job_store, job_id, message)
        try:
            expect(shown).to_have_attribute("title", message, timeout=5_000)
            break
        except AssertionError:
            continue
    expect(shown).to_have_text(message)


def test_long_stage_messages_truncate_and_keep_the_actions_in_reach(person, demo, job_store):
    page = person.page
    messages = longest_stage_messages()
    assert {"canvas", "program", "research"} <= set(messages), messages
    messages["research-fetch"] = "Fetching www.an-unusually-long-host-name-for-a-source.example.org (12 of 20)"
    for width_name, viewport in WIDTHS.items():
        page.set_viewport_size(viewport)
        page.goto("/sessions")
        wait_ready(page)
        entry = tracker_job(page, demo["id"])
        expect(entry).to_be_visible()
        for operation, message in messages.items():
            shown = entry.locator(".tracker-message")
            show_message(job_store, demo["id"], shown, message)
            tracker = page.locator("#job-tracker").bounding_box()
            assert tracker["x"] >= 0 and tracker["x"] + tracker["width"] <= viewport["width"], (width_name, tracker)
            sideways = page.evaluate("(() => { const t = document.getElementById('job-tracker');"
                                     " return t.scrollWidth > t.clientWidth; })()")
            assert not sideways, f"{operation}: the tracker scrolls sideways"
            for name in ("Details", "Cancel", "Dismiss"):
                button = entry.get_by_role("link" if name == "Details" else "button", name=name)
                box = button.bounding_box()
                inside = box and tracker["x"] <= box["x"] and box["x"] + box["width"] <= tracker["x"] + tracker["width"]
                assert inside, f"{width_name} {operation}: {name} is at {box}, outside the tracker {tracker}"
        # Between two reports (a demo step lasts 30 s) the elapsed time moves and the bar shows activity.
        elapsed = entry.locator(".tracker-elapsed")
        expect(elapsed).to_have_text(re.compile(r"\b\d+:\d\d elapsed\b"))
        expect(elapsed).not_to_have_text(elapsed.inner_text(), timeout=3_000)
        expect(entry.locator(".progress")).to_have_class(re.compile(r"\bprogress-active\b"))
        entry.get_by_role("button", name="Cancel").focus()  # tabbing to an action does not shift the panel
        assert page.evaluate("document.querySelector('#job-tracker .tracker-list').scrollLeft") == 0
        screenshot(page, f"tracker-long-message-{width_name}")


@pytest.mark.parametrize("running", [1, 3, 8])
def test_the_live_corner_never_covers_the_navigation_or_the_pages_actions(person, session, demo, running):
    page = person.page
    serve_extra_jobs(person.context, fake_jobs(running - 1, session["id"]))
    problems = []
    try:
        for width_name, viewport in WIDTHS.items():
            page.set_viewport_size(viewport)
            pages = [("sessions", "/sessions"), ("session", session["url"]), ("jobs", "/jobs"),
                     ("job", f"/jobs/{demo['id']}"), ("programs", "/programs")]
            if running > 1:  # more jobs change the corner, not the pages: the two with the most to cover
                pages = [page_ for page_ in pages if page_[0] in ("session", "jobs")]
            for name, path in pages:
                assert page.goto(path).ok, path
                wait_ready(page)
                expect(page.locator("#job-tracker article.tracker-job")).to_have_count(running)
                floating = boxes(page, "#job-tracker, #toasts .toast")
                guarded = boxes(page, GUARDED)
                assert guarded, f"{path}: nothing guarded found"
                for label, box in guarded:
                    for _, corner in floating:
                        if overlaps(box, corner):
                            problems.append(f"{width_name} {path} ({running} jobs): {label!r} {box} under {corner}")
                tracker = page.locator("#job-tracker").bounding_box()
                if tracker["height"] > viewport["height"] * 0.75:
                    problems.append(f"{width_name} {path}: the tracker is {tracker['height']}px tall")
                wide = page.evaluate("document.documentElement.scrollWidth")
                if wide > viewport["width"]:
                    problems.append(f"{width_name} {path}: the page is {wide}px wide")
                if running != 3:
                    screenshot(page, f"corner-{running}-jobs-{width_name}-{name}")
    finally:
        # A list request still in flight may be answered after this: its handler's error is not the test's.
        person.context.unroute_all(behavior="ignoreErrors")
    assert not problems, "\n".join(problems)
