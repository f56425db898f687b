"""How job state reaches the tabs: one stream per browser, a leader that hands over, polling when the
stream fails, events ordered by seq, finished jobs announced once per user."""

from __future__ import annotations

import re
import time

from playwright.sync_api import expect

from tests.browser.conftest import (
    EVENTS_PATH,
    StreamCounter,
    expect_tracker_ended,
    screenshot,
    tracker_job,
    transports,
    wait_ready,
)
from tests.support import wait_for

# Pages that do not show a job themselves, so the tracker gives each its full entry (not a one-line summary).
PAGES = ["/sessions", "/programs", "/sessions/new"]


def open_tabs(user, count: int) -> list:
    """``count`` tabs of the user's browser on assorted pages, each with jobs.js attached."""
    tabs = [user.page] + [user.new_tab() for _ in range(count - 1)]
    for number, tab in enumerate(tabs):
        tab.goto(PAGES[number % len(PAGES)])
    for tab in tabs:
        wait_ready(tab)
    return tabs


def one_leader(tabs: list, timeout: float = 10.0) -> list[str | None]:
    def settled():
        modes = transports(tabs)
        return modes if sorted(modes) == ["follower"] * (len(tabs) - 1) + ["leader"] else None

    return wait_for(settled, timeout, 0.1, f"one leader among {len(tabs)} tabs, the rest followers")


def tracker_percent(tab, job_id: str) -> int | None:
    text = tab.evaluate("""(id) => {
        const pct = document.querySelector(`#job-tracker [data-job-id="${id}"] .tracker-percent`);
        return pct ? pct.textContent : null;
    }""", job_id)
    return int(text.rstrip("%")) if text else None


def test_one_event_stream_per_browser_eight_tabs_all_live_and_a_ninth_loads_at_once(user):
    user.page.goto("about:blank")  # the sign-up page's stream ends; count from here
    counter = StreamCounter(user.context)
    tabs = open_tabs(user, 8)
    one_leader(tabs)
    assert counter.open == 1, f"{counter.open} streams open for one browser"

    job = user.start_demo(steps=15, step_seconds=0.4)
    for tab in tabs:
        expect(tracker_job(tab, job["id"]).locator(".tracker-percent")).to_have_text(re.compile(r"^[1-9]\d*%$"))

    started = time.monotonic()
    ninth = user.new_tab()
    ninth.goto("/jobs")
    load_seconds = time.monotonic() - started
    wait_ready(ninth)
    assert load_seconds < 3, f"the ninth tab took {load_seconds:.1f}s to load"
    row = ninth.locator(f'table.jobs-table tr[data-job-id="{job["id"]}"] .job-status')
    expect(row).to_have_attribute("data-status", "running")
    ninth_seen = tracker_percent(ninth, job["id"]) or 0
    wait_for(lambda: (tracker_percent(ninth, job["id"]) or 0) > ninth_seen, 10, 0.1, "live progress in the ninth tab")

    for tab in [*tabs, ninth]:
        expect_tracker_ended(tab, job["id"], "Countdown finished — View job")
    one_leader([*tabs, ninth])
    assert counter.open == 1, f"{counter.open} streams open for one browser"
    assert counter.started <= 2, f"{counter.started} streams were opened for one browser"


def test_when_the_leading_tab_closes_another_takes_over_within_two_seconds(user):
    tabs = open_tabs(user, 3)
    modes = one_leader(tabs)
    job = user.start_demo(steps=25, step_seconds=0.4)
    for tab in tabs:
        expect(tracker_job(tab, job["id"]).locator(".tracker-percent")).to_be_visible()

    leader = tabs[modes.index("leader")]
    rest = [tab for tab in tabs if tab is not leader]
    leader.close()
    closed = time.monotonic()
    one_leader(rest, timeout=5)
    took = time.monotonic() - closed
    assert took < 2.0, f"a new leader took {took:.1f}s"

    seen = {id(tab): tracker_percent(tab, job["id"]) or 0 for tab in rest}
    for tab in rest:
        wait_for(lambda tab=tab: (tracker_percent(tab, job["id"]) or 0) > seen[id(tab)], 10, 0.1,
                 "live progress after the hand-over")
    user.cancel(job["id"])
    for tab in rest:
        expect_tracker_ended(tab, job["id"], "Cancelled")


def test_stream_cut_mid_job_falls_back_to_polling_what_changed_and_returns_to_sse(user, proxy):
    page = user.page
    page.goto(proxy.url + "/sessions")  # through a proxy that can cut the stream
    wait_ready(page)
    html = page.locator("html")
    expect(html).to_have_attribute("data-jobs-transport", "leader")
    listed = []
    user.context.on("request", lambda r: listed.append(r) if "/api/background-jobs?" in r.url else None)
    job = user.start_demo(steps=60, step_seconds=0.4)
    percent = tracker_job(page, job["id"]).locator(".tracker-percent")
    expect(percent).to_have_text(re.compile(r"^[1-9]\d*%$"))
    expect(tracker_job(page, job["id"])).not_to_contain_text("null")  # a job without steps shows no empty part

    user.context.route(f"**{EVENTS_PATH}*", lambda route: route.abort())  # the stream stays down
    assert proxy.cut() >= 1, "the page had no stream open through the proxy"
    expect(html).to_have_attribute("data-jobs-transport", "polling", timeout=5_000)
    mark = len(listed)
    before = tracker_percent(page, job["id"])
    wait_for(lambda: page.wait_for_timeout(100) or tracker_percent(page, job["id"]) > before, 10, 0,
             "progress while polling")
    wait_for(lambda: page.wait_for_timeout(100) or len(listed) >= mark + 2, 10, 0, "two polls")
    assert html.get_attribute("data-jobs-transport") == "polling"
    polls = listed[mark:]
    assert all("since=" in poll.url for poll in polls), [poll.url for poll in polls]  # a diff or a 304
    answers = [poll.response() for poll in polls]
    assert all(answer and answer.status in (200, 304) for answer in answers)
    assert any(answer.status == 200 and answer.json()["jobs"] for answer in answers), "the diff carried the job"
    screenshot(page, "polling-fallback")

    user.context.unroute(f"**{EVENTS_PATH}*")
    expect(html).to_have_attribute("data-jobs-transport", "leader", timeout=25_000)
    after = tracker_percent(page, job["id"])
    wait_for(lambda: page.wait_for_timeout(100) or tracker_percent(page, job["id"]) > after, 10, 0,
             "live progress over SSE again")
    polled = len(listed)
    page.wait_for_timeout(3_500)  # longer than a polling round: no more polls once the stream is back
    assert len(listed) == polled, "the page kept polling after the stream came back"
    user.cancel(job["id"])


def test_a_start_in_one_tab_shows_in_all_and_old_events_are_ignored(user):
    tabs = open_tabs(user, 2)
    one_leader(tabs)
    job = user.start_demo(steps=10, step_seconds=3)  # each state lasts 3 s
    for tab in tabs:
        expect(tracker_job(tab, job["id"]).locator(".tracker-message")).to_have_text(re.compile(r"^Step \d+ of 10$"))
    stored = """([key, id]) => {
        const saved = JSON.parse(localStorage.getItem(key) || "null");
        const held = saved ? (Array.isArray(saved.jobs) ? saved.jobs : Object.values(saved.jobs || {})) : [];
        return held.find((job) => job.id === id && job.message);
    }"""
    current = wait_for(lambda: tabs[0].evaluate(stored, [f"epm:jobs:{user.user_id}", job["id"]]), 5, 0.1,
                       "the job in localStorage")

    relay = """([userId, job]) => new BroadcastChannel(`epm-jobs:${userId}`).postMessage({type: "jobs", jobs: [job]})"""
    stale = {**current, "seq": current["seq"] - 1, "message": "stale state", "progress": 99}
    tabs[1].evaluate(relay, [user.user_id, stale])
    tabs[0].wait_for_timeout(700)  # to show that nothing happens: a relayed message arrives in milliseconds
    for tab in tabs:
        expect(tracker_job(tab, job["id"]).locator(".tracker-message")).not_to_have_text("stale state")

    newer = {**current, "seq": current["seq"] + 1, "message": "newer state"}
    tabs[1].evaluate(relay, [user.user_id, newer])
    expect(tracker_job(tabs[0], job["id"]).locator(".tracker-message")).to_have_text("newer state", timeout=2_000)
    user.cancel(job["id"])


def toasts_for(tabs: list, job_id: str) -> int:
    return sum(tab.locator(f'#toasts .toast[data-job-id="{job_id}"]').count() for tab in tabs)


def test_a_finished_job_is_toasted_once_across_tabs_and_page_views(user):
    tabs = open_tabs(user, 2)
    one_leader(tabs)
    job = user.start_demo(steps=3, step_seconds=0.3)
    wait_for(lambda: toasts_for(tabs, job["id"]) >= 1, 15, 0.1, "a toast")
    tabs[0].wait_for_timeout(2_000)  # longer than a hidden tab's 1.5 s head start: no second toast may come
    assert toasts_for(tabs, job["id"]) == 1
    assert user.job(job["id"])["acknowledged"] is True

    for tab in tabs:
        tab.reload()
        wait_ready(tab)
    tabs[0].wait_for_timeout(1_500)  # to show that nothing happens
    assert toasts_for(tabs, job["id"]) == 0


def test_a_job_that_finished_with_no_tab_open_is_announced_once_on_the_next_page_view(user, browser, live_server):
    user.page.close()
    job = user.start_demo(steps=2, step_seconds=0.2)
    assert user.wait_terminal(job["id"])["status"] == "completed"
    assert user.job(job["id"])["acknowledged"] is False  # recorded as ended, and nobody was told yet

    page = user.new_tab("/programs")
    toast = page.locator(f'#toasts .toast[data-job-id="{job["id"]}"]')
    expect(toast.locator(".toast-text")).to_have_text("Countdown finished")
    expect(toast.locator("a.toast-link")).to_have_text("View job")
    expect(toast.locator("a.toast-link")).to_have_attribute("href", f"/jobs/{job['id']}")
    screenshot(page, "toast-announced-on-next-page-view")

    again = user.new_tab("/sessions")
    wait_ready(again)
    page.reload()
    wait_ready(page)

    # Another browser of the same user: the acknowledgement is kept on the server, not in this browser.
    other = browser.new_context(base_url=live_server.url)
    try:
        elsewhere = other.new_page()
        elsewhere.goto("/login")
        elsewhere.get_by_label("Username").fill(user.username)
        elsewhere.get_by_label("Password").fill(user.password)
        elsewhere.get_by_role("button", name=re.compile("Sign in", re.I)).click()
        elsewhere.wait_for_url(lambda url: "/login" not in url)
        wait_ready(elsewhere)
        again.wait_for_timeout(1_500)  # to show that nothing happens
        assert toasts_for([page, again, elsewhere], job["id"]) == 0
    finally:
        other.close()
