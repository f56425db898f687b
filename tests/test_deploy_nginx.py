"""The documented deployment: HTTPS cookies and HSTS (epm/web/proxy.py), then docs/deploy.md's nginx block run
for real with TLS and HTTP/2 in front of two instances, driven by Chromium (see tests/deploy_support.py).
"""

from __future__ import annotations

import re
import signal
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from epm import create_app
from epm.config import load
from epm.web.proxy import secure_cookie
from tests.browser.conftest import (
    SESSION,
    StreamCounter,
    User,
    expect_tracker_ended,
    tracker_job,
    transports,
    wait_ready,
)
from tests.conftest import make_user
from tests.deploy_support import (
    ACKNOWLEDGED,
    RECORD_STATE,
    RECORD_STREAM,
    ChromiumThread,
    Deployment,
    InFlight,
    longest_gap,
    percentile,
    skip_reason,
)
from tests.support import wait_for

SIGNUP = {"username": "carol", "password": "password123"}


def _set_cookies(response) -> dict[str, str]:
    return {value.split("=", 1)[0]: value for value in response.headers.getlist("Set-Cookie")}


def _signed_up(app, base_url: str):
    response = app.test_client().post("/signup", data={**SIGNUP}, base_url=base_url)
    assert response.status_code == 302, response.text[:300]
    return response


# -- cookies and HSTS --------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["embedded"])
def test_over_https_from_the_proxy_every_cookie_is_secure(app):
    cookies = _set_cookies(_signed_up(app, "https://epm.test:8443"))
    assert "session" in cookies  # remember-me extends this one cookie (no remember_token)
    for name, header in cookies.items():
        assert "; secure" in header.lower(), f"{name} is not Secure over HTTPS: {header}"


@pytest.mark.parametrize("backend", ["embedded"])
def test_over_plain_http_cookies_stay_usable_and_no_hsts_is_sent(app):
    response = _signed_up(app, "http://127.0.0.1:8000")
    cookies = _set_cookies(response)
    assert "session" in cookies  # remember-me extends this one cookie (no remember_token)
    assert not any("secure" in header.lower() for header in cookies.values()), cookies
    assert "Strict-Transport-Security" not in response.headers


@pytest.mark.parametrize("backend", ["embedded"])
def test_https_only_site_marks_cookies_secure_even_on_http_and_sends_hsts(app):
    app.config.update(EPM_HTTPS=True, EPM_HSTS_SECONDS=600)
    from epm.web import proxy

    proxy.init_app(app)  # wrapped again with the new settings: the outer wrapper decides
    user = make_user(app, "dave")
    client = app.test_client()
    response = client.post("/login", data={"username": user.username, "password": "password123"},
                           base_url="http://127.0.0.1:8000")
    assert response.status_code == 302
    cookies = _set_cookies(response)
    assert "session" in cookies  # remember-me extends this one cookie (no remember_token)
    assert all("; secure" in header.lower() for header in cookies.values()), cookies
    assert response.headers.getlist("Strict-Transport-Security") == ["max-age=600"]
    assert client.get("/healthz").headers["Strict-Transport-Security"] == "max-age=600"


@pytest.mark.parametrize("backend", ["embedded"])
def test_hsts_is_only_sent_when_the_operator_declares_the_site_https_only(app):
    response = app.test_client().get("/login", base_url="https://epm.test")
    assert response.status_code == 200
    assert "Strict-Transport-Security" not in response.headers


def test_hsts_seconds_zero_sends_none_and_a_negative_value_is_refused():
    settings = load({"EPM_HTTPS": "1", "EPM_HSTS_SECONDS": "0", "SECRET_KEY": "x"})
    assert settings["EPM_HTTPS"] is True
    embedded = {"TESTING": True, "EPM_MAINTENANCE": False, "LOG_LEVEL": "WARNING", "SQLALCHEMY_DATABASE_URI": "sqlite://"}
    app = create_app({**settings, **embedded})
    assert "Strict-Transport-Security" not in app.test_client().get("/healthz").headers
    with pytest.raises(ValueError, match="EPM_HSTS_SECONDS must be 0"):
        create_app({**embedded, "EPM_HSTS_SECONDS": -1})


def test_defaults_are_no_https_only_and_a_year_of_hsts():
    settings = load({})
    assert settings["EPM_HTTPS"] is False
    assert settings["EPM_HSTS_SECONDS"] == 365 * 24 * 3600


def test_the_deployment_test_says_which_package_is_missing(monkeypatch):
    from tests import deploy_support

    monkeypatch.setattr(deploy_support, "_skip_reason", lambda: None)
    monkeypatch.setattr(deploy_support, "_nginx", lambda: None)
    assert "nginx-light" in deploy_support.skip_reason()
    monkeypatch.setattr(deploy_support, "_nginx", lambda: "/usr/sbin/nginx")
    monkeypatch.setattr(deploy_support.shutil, "which", lambda name: None)
    assert "openssl" in deploy_support.skip_reason()


def test_the_tested_nginx_block_is_the_documented_one_with_only_addresses_and_paths_replaced(tmp_path):
    from tests.deploy_support import documented_nginx_block, site_config

    documented = documented_nginx_block()
    assert "proxy_set_header Host $http_host;" in documented  # host and port, for the CSRF referrer check
    tested = site_config(["127.0.0.1:1", "127.0.0.1:2"], 18443, tmp_path / "c.crt", tmp_path / "c.key")

    def directives(block: str) -> list[str]:
        return [line.split("#")[0].strip() for line in block.splitlines()]

    changed = set(directives(tested)) - set(directives(documented))
    assert changed == {"server 127.0.0.1:1;", "server 127.0.0.1:2;", "listen 127.0.0.1:18443 ssl http2;",
                       "server_name epm.test;", f"ssl_certificate     {tmp_path / 'c.crt'};",
                       f"ssl_certificate_key {tmp_path / 'c.key'};"}, changed
    assert len(directives(tested)) == len(directives(documented))


def test_secure_is_added_once_whatever_its_case():
    assert secure_cookie("session=abc; HttpOnly; Path=/") == "session=abc; HttpOnly; Path=/; Secure"
    assert secure_cookie("a=b; Path=/; secure") == "a=b; Path=/; secure"
    assert secure_cookie("secure=1; Path=/") == "secure=1; Path=/; Secure"  # a cookie named "secure" is not the flag


# -- the deployment, run -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def deployment_and_chromium():
    """The deployment, and Chromium on a thread of its own, made at the same time."""
    if (reason := skip_reason()) is not None:
        pytest.skip(reason)
    with ThreadPoolExecutor(1) as pool:
        starting = pool.submit(Deployment)
        try:
            chromium = ChromiumThread()
        except BaseException:
            starting.result().close()
            raise
        try:
            deployment = starting.result()
        except BaseException:
            chromium.close()
            raise
    try:
        yield deployment, chromium
    finally:
        chromium.close()
        deployment.close()


@pytest.fixture
def deployment(deployment_and_chromium) -> Deployment:
    return deployment_and_chromium[0]


@pytest.fixture
def chromium(deployment_and_chromium) -> ChromiumThread:
    return deployment_and_chromium[1]


def create_session_through_the_form(page) -> None:
    page.goto("/sessions/new")
    page.get_by_label("Name").fill(SESSION["name"])
    page.get_by_label("Business").fill(SESSION["business"])
    page.get_by_label("Objectives").fill("\n".join(SESSION["objectives"]))
    page.get_by_label("Budget").fill(str(SESSION["budget"]))
    page.get_by_label("Deadline").fill(SESSION["deadline"])
    page.get_by_label("Team size").fill(str(SESSION["team_size"]))
    page.get_by_role("button", name="Create session").click()
    page.wait_for_url(re.compile(r"/sessions/\d+$"))


def sign_in(page, person: User) -> None:
    page.goto("/login")
    page.get_by_label("Username").fill(person.username)
    page.get_by_label("Password").fill(person.password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(lambda url: "/login" not in url)


def one_leader(tabs: list):
    def settled():
        modes = transports(tabs)
        return modes if sorted(modes) == ["follower"] * (len(tabs) - 1) + ["leader"] else None

    modes = wait_for(settled, 15, 0.1, f"one leader among {len(tabs)} tabs, the rest followers")
    return tabs[modes.index("leader")]


def start_demo(page, csrf: str, **params) -> str:
    """Start a demo job from ``page`` (its origin, its cookies) with the CSRF token ``csrf``; its id.

    A 409 means the user's previous demo is over but not yet written to PostgreSQL: asked again.
    """
    def started():
        return page.evaluate("""async ([body, csrf]) => {
            const response = await fetch("/api/background-jobs", { method: "POST", body: JSON.stringify(body),
                headers: { "Content-Type": "application/json", "X-CSRFToken": csrf } });
            if (response.status === 409) return null;
            if (response.status !== 202) throw new Error(`start: ${response.status} ${await response.text()}`);
            return (await response.json()).job.id;
        }""", [{"job_type": "demo_countdown", "params": params}, csrf])

    return wait_for(started, 10, 0.1, "the demo to start")


# A bare page's own EventSource on the user's stream, recording each job event's arrival (ms since the epoch,
# the clock a job's seq is written with): no app code on the page, so only the way in differs.
FOLLOW_EVENTS = """(url) => new Promise((resolve) => {
  window.__arrivals = [];
  const source = new EventSource(url);
  source.addEventListener("job", (event) => {
    const job = JSON.parse(event.data);
    window.__arrivals.push({ t: Date.now(), id: job.id, seq: job.seq, status: job.status });
  });
  source.onopen = () => resolve(true);
  setTimeout(() => resolve(false), 15000);
})"""


def event_delays(page, job_id: str) -> dict[int, float]:
    """seq -> milliseconds from the making of each of the job's events (seq is a ms clock) to the page."""
    return {entry["seq"]: entry["t"] - entry["seq"] for entry in page.evaluate("window.__arrivals")
            if entry["id"] == job_id}


@pytest.mark.live
@pytest.mark.browser
@pytest.mark.real_backends
def test_events_through_nginx_reach_chromium_within_50_ms_of_a_direct_stream(deployment, chromium):
    chromium.run(events_through_nginx_and_direct, deployment, chromium.browser)


def events_through_nginx_and_direct(deployment: Deployment, chromium) -> None:
    proxied = chromium.new_context(base_url=deployment.nginx.url, ignore_https_errors=True)
    direct = chromium.new_context(base_url=deployment.instances[0].url)
    try:
        person = User(proxied, deployment.nginx.url, f"e{uuid.uuid4().hex[:10]}", "password123").signup()
        straight = direct.new_page()
        sign_in(straight, person)  # the same user, in a browser that goes to an instance directly
        csrf = straight.locator('meta[name="csrf-token"]').get_attribute("content")
        pages = [person.page, straight]
        for page in pages:
            page.goto("/healthz")
            assert page.evaluate(FOLLOW_EVENTS, "/api/background-jobs/events"), f"no event stream at {page.url}"

        # Jobs of 150 steps of 20 ms, an event each (EPM_PROGRESS_INTERVAL is 10 ms here), on both streams.
        # A busy machine can stall either side; up to three rounds, and the best one counts.
        rounds = []
        for _ in range(3):
            job_id = start_demo(straight, csrf, steps=150, step_seconds=0.02)
            wait_for(lambda job_id=job_id: all(page.evaluate("""(id) => window.__arrivals.some(
                (e) => e.id === id && e.status === "completed")""", job_id) for page in pages),
                     30, 0.1, "the job's end on both streams")
            through_proxy, straight_in = (event_delays(page, job_id) for page in pages)
            both = through_proxy.keys() & straight_in.keys()
            assert len(both) >= 120, f"only {len(both)} events reached both streams"
            proxy_ms = [through_proxy[seq] for seq in both]
            direct_ms = [straight_in[seq] for seq in both]
            extra_ms = [through_proxy[seq] - straight_in[seq] for seq in both]
            rounds.append(percentile(proxy_ms, 0.99) - percentile(direct_ms, 0.99))
            print(f"\nevent delay over {len(both)} events: through nginx p50 {percentile(proxy_ms, 0.5):.0f} ms, "
                  f"p99 {percentile(proxy_ms, 0.99):.0f} ms; direct p50 {percentile(direct_ms, 0.5):.0f} ms, "
                  f"p99 {percentile(direct_ms, 0.99):.0f} ms; nginx's extra per event p50 "
                  f"{percentile(extra_ms, 0.5):.0f} ms, p99 {percentile(extra_ms, 0.99):.0f} ms")
            if rounds[-1] <= 50:
                break
        assert min(rounds) <= 50, f"nginx's p99 exceeded direct's by {rounds} ms: it holds events back"
    finally:
        proxied.close()
        direct.close()


@pytest.mark.live
@pytest.mark.browser
@pytest.mark.real_backends
def test_documented_nginx_serves_two_instances_over_http2_through_a_rolling_restart(deployment, chromium):
    chromium.run(rolling_restart_behind_nginx, deployment, chromium.browser)


def rolling_restart_behind_nginx(deployment: Deployment, chromium) -> None:
    from playwright.sync_api import expect

    nginx = deployment.nginx
    context = chromium.new_context(base_url=nginx.url, ignore_https_errors=True,
                                   viewport={"width": 1280, "height": 800})
    context.add_init_script(RECORD_STREAM)
    streams = StreamCounter(context)
    acknowledgements = InFlight(context, "/acknowledge")
    try:
        # Sign-up, a session and a start: POSTs over HTTPS on a port other than 443 (the Referer check).
        person = User(context, nginx.url, f"d{uuid.uuid4().hex[:10]}", "password123").signup()
        page = person.page
        assert page.evaluate("performance.getEntriesByType('navigation')[0].nextHopProtocol") == "h2"
        assert page.evaluate("window.isSecureContext && Boolean(navigator.locks)"), "no secure context"
        cookies = {cookie["name"]: cookie for cookie in context.cookies()}
        assert "session" in cookies  # remember-me extends this one cookie (no remember_token)
        assert all(cookie["secure"] for cookie in cookies.values()), cookies
        create_session_through_the_form(page)
        wait_ready(page)
        epm = page.locator('section.operation[data-operation="epm_generation"]')
        epm.get_by_role("button", name="Generate EPM program").click()
        progress = epm.locator("[data-job-progress]")
        expect(progress).to_have_attribute("data-job-id", re.compile(r"\w+"))  # started: the POST passed
        epm_id = progress.get_attribute("data-job-id")

        # 8 tabs (7 load while the program is made), one event stream for the whole browser.
        tabs = [page] + [person.new_tab() for _ in range(7)]
        for tab, path in zip(tabs[1:], ["/jobs", "/sessions", "/programs"] * 2 + ["/"], strict=True):
            tab.goto(path, wait_until="commit")
        for tab in tabs:
            wait_ready(tab)
        expect(epm.locator("[data-job-progress] p.job-done")).to_have_text("Completed", timeout=30_000)
        expect(epm.locator("[data-latest-result] a")).to_have_text("View program")
        wait_for(lambda: sum(tab.locator(f'#toasts .toast[data-job-id="{epm_id}"]').count() for tab in tabs), 15,
                 0.1, "the program's toast")
        leader = one_leader(tabs)
        held = wait_for(lambda: (counts := deployment.streams_by_instance()) and sum(counts) == 1 and counts,
                        15, 0.2, "one event stream held for the browser, counted by the instances")
        assert streams.open == 1, f"the browser has {streams.open} event streams open"
        holder = deployment.instances[held.index(1)]
        other = deployment.instances[1 - held.index(1)]

        # A job on the instance that stays (a job on the stopped one would get only its graceful timeout):
        # started there directly, as this browser's user.
        person.refresh_tokens(page)
        cookie_header = "; ".join(f"{c['name']}={c['value']}" for c in context.cookies())
        with httpx.Client(base_url=other.url, timeout=10,
                          headers={"Cookie": cookie_header, "X-CSRFToken": person.csrf}) as direct:
            response = direct.post("/api/background-jobs", json={
                "job_type": "demo_countdown", "params": {"steps": 16, "step_seconds": 0.25, "label": "rolling"}})
            assert response.status_code == 202, response.text
            job_id = response.json()["job"]["id"]
            leader.evaluate(RECORD_STATE)
            for tab in tabs:
                expect(tracker_job(tab, job_id).locator(".tracker-percent")).to_have_text(re.compile(r"^\d+%$"))

            # The rolling restart: SIGTERM to the instance holding the stream; the stream moves to the other.
            moved = [0 if server is holder else 1 for server in deployment.instances]
            stopped_at = time.time() * 1000
            holder.stop(signal.SIGTERM)
            assert holder.process.returncode == 0, holder.log()
            wait_for(lambda: deployment.streams_by_instance() == moved, 20, 0.2,
                     "the browser's stream on the other instance")
            for tab in tabs:
                expect_tracker_ended(tab, job_id, "Countdown finished — View job", timeout=30_000)
            finished = direct.get(f"/api/background-jobs/{job_id}").json()["job"]
        assert finished["status"] == "completed", finished

        # The toast, once across the 8 tabs: counted when every tab has asked and been answered.
        toast = f'#toasts .toast[data-job-id="{job_id}"]'
        wait_for(lambda: all(tab.evaluate(ACKNOWLEDGED, job_id) for tab in tabs), 15, 0.1,
                 "every tab to have asked to announce the job")
        # (a call into the page lets Playwright deliver the pending request events to the counter)
        wait_for(lambda: leader.evaluate("0") == 0 and acknowledgements.open == 0, 15, 0.05,
                 "the acknowledgements to be answered")
        assert sum(tab.locator(toast).count() for tab in tabs) == 1
        assert sum(tab.locator(f'#toasts .toast[data-job-id="{epm_id}"]').count() for tab in tabs) == 1
        for tab in tabs:
            assert tab.locator(".toast-error, [role=alert]").count() == 0, "an error was shown"
        assert not person.page_errors, person.page_errors
        one_leader(tabs)
        assert streams.open == 1, f"the browser has {streams.open} event streams open after the restart"

        # What the browser saw: the stream's interruption and the longest wait between two updates.
        log = leader.evaluate("window.__epmStream")
        errors = [entry["t"] for entry in log if entry["kind"] == "error" and entry["t"] >= stopped_at]
        assert errors, "the stopping instance did not end the browser's stream"
        reopened = [entry["t"] for entry in log if entry["kind"] == "open" and entry["t"] > errors[0]]
        assert reopened, "the browser's stream did not reopen"
        seen = [entry["t"] for entry in leader.evaluate("window.__epmSeen") if entry["id"] == job_id]
        streamed = [entry["t"] for entry in log if entry["kind"] == "job" and entry.get("id") == job_id]
        print(f"\nrolling restart: stream down {reopened[0] - errors[0]:.0f} ms; longest gap between the job's "
              f"updates on the page {longest_gap(seen):.0f} ms, on the stream {longest_gap(streamed):.0f} ms "
              f"(steps of 250 ms)")
        assert longest_gap(seen) < 15_000, "the page stalled during the restart"
    finally:
        context.close()
