"""How the pages and the job widgets fit a phone-sized screen (issue 5: clean at 1280 px and at 390 px)."""

from __future__ import annotations

from playwright.sync_api import expect

from tests.browser.conftest import screenshot, tracker_job, wait_ready


def test_narrow_screen_390px_nothing_overflows_and_the_tracker_fits(user):
    session = user.create_session()
    page = user.page
    page.set_viewport_size({"width": 390, "height": 844})
    job = user.start_demo(steps=60, step_seconds=0.5)
    problems = []
    for name, path in [("sessions", "/sessions"), ("session", session["url"]), ("jobs", "/jobs"),
                       ("programs", "/programs")]:
        page.goto(path)
        wait_ready(page)
        tracker = page.get_by_role("region", name="Background jobs")
        expect(tracker_job(page, job["id"])).to_be_visible()
        box = tracker.bounding_box()
        if box["x"] < 0 or box["x"] + box["width"] > 390:
            problems.append(f"{path}: the tracker is at {box}")
        width = page.evaluate("document.documentElement.scrollWidth")
        shot = screenshot(page, f"narrow-390-{name}")
        if width > 390:
            problems.append(f"{path} is {width}px wide at a 390px viewport ({shot})")
    user.cancel(job["id"])
    assert not problems, "\n".join(problems)
