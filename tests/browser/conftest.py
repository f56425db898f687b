"""Browser fixtures: one real gunicorn+gevent server, one headless Chromium, a fresh user per test.

The browser tests run only when asked (``EPM_BROWSER_TESTS=1``), with Debian's Chromium at
``/usr/bin/chromium`` and real Redis and PostgreSQL (``REDIS_URL``, ``DATABASE_URL``); otherwise the
whole directory is skipped with a message that says which of these is missing.

Each test gets its own browser context (cookies, localStorage, BroadcastChannel and Web Locks are
per context, so a context is "one browser" of one user) with a user signed up through the real form.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from epm.jobs.store import Guard
from tests.support import LiveServer, PostgresDatabase, real_backends, upgrade_database

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
SCREENS = Path(os.environ.get("EPM_SCREENSHOTS", Path(__file__).parent / "screenshots"))
# Seconds per stage of an operation on the test server: an EPM generation (9 stages) lasts about 6 s.
STAGE_SECONDS = 0.7
EVENTS_PATH = "/api/background-jobs/events"

SESSION = {"name": "Meal kits 2027", "business": "We run a subscription meal-kit service for busy families.",
           "objectives": ["Grow subscribers by 30%", "Launch a mobile app"], "budget": 250000,
           "deadline": "2027-06-30", "team_size": 6, "source_urls": []}


def _skip_reason() -> str | None:
    if os.environ.get("EPM_BROWSER_TESTS") == "0":
        return "browser tests are off (EPM_BROWSER_TESTS=0)"
    if not CHROMIUM.exists():
        return f"browser tests need Chromium at {CHROMIUM} (apt-get install chromium)"
    if real_backends() is None:
        return "browser tests need real backends: set REDIS_URL and DATABASE_URL"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "browser tests need Playwright for Python (pip install playwright)"
    return None


def pytest_collection_modifyitems(config, items) -> None:
    reason = _skip_reason()
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.browser)
            if reason:
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.when == "call":
        item.stash[_FAILED] = report.failed
    return report


_FAILED = pytest.StashKey[bool]()


# -- session-wide: database, server, browser --------------------------------------------------------
@pytest.fixture(scope="session")
def browser_db() -> Iterator[str]:
    database = PostgresDatabase(real_backends()[1])
    upgrade_database(database.url)
    yield database.url
    database.drop()


@pytest.fixture(scope="session")
def key_prefix() -> str:
    return f"epmbrowser:{uuid.uuid4().hex[:8]}:"


@pytest.fixture(scope="session")
def live_server(browser_db, key_prefix) -> Iterator[LiveServer]:
    with browser_server(browser_db, key_prefix) as server:
        yield server


@contextlib.contextmanager
def browser_server(database: str, prefix: str, *, workers: int = 2,
                   stage_seconds: float = STAGE_SECONDS) -> Iterator[LiveServer]:
    """A server for the browser tests on ``database``, its Redis keys under ``prefix`` (deleted after)."""
    env = {"SECRET_KEY": "browser-test", "REDIS_URL": real_backends()[0], "DATABASE_URL": database,
           "EPM_KEY_PREFIX": prefix, "EPM_STAGE_SECONDS": str(stage_seconds), "EPM_SSE_HEARTBEAT": "5",
           "LOG_LEVEL": "WARNING", "EPM_MAINTENANCE_INTERVAL": "2"}
    server = LiveServer(env, workers=workers).start()
    try:
        yield server
    finally:
        server.stop()
        _delete_keys(prefix)


def _delete_keys(prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(real_backends()[0])
    try:
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


class CuttableProxy:
    """A TCP proxy in front of the live server that can cut the event streams passing through it.

    Closing the sockets mid-stream is what a dropped connection looks like to the browser: its
    EventSource reports an error and reconnects (which a test may then refuse with ``context.route``).
    """

    def __init__(self, upstream_port: int):
        self.upstream_port = upstream_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._lock = threading.Lock()
        self._pairs: list[dict[str, Any]] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            except OSError:
                client.close()
                continue
            pair = {"sockets": (client, upstream), "last_request": b""}
            with self._lock:
                self._pairs.append(pair)
            threading.Thread(target=self._pump, args=(pair, client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(pair, upstream, client, False), daemon=True).start()

    def _pump(self, pair: dict[str, Any], source: socket.socket, target: socket.socket, from_client: bool) -> None:
        try:
            while data := source.recv(65536):
                if from_client:
                    pair["last_request"] = data[:300]
                target.sendall(data)
        except OSError:
            pass  # the other side, or cut(), closed the connection
        finally:
            _shut(source, target)

    def cut(self, marker: bytes = EVENTS_PATH.encode()) -> int:
        """Close every connection whose latest request mentions ``marker``; return how many."""
        with self._lock:
            pairs = [pair for pair in self._pairs if marker in pair["last_request"]]
        for pair in pairs:
            _shut(*pair["sockets"])
        return len(pairs)

    def close(self) -> None:
        self._listener.close()
        self.cut(b"")


def _shut(*sockets: socket.socket) -> None:
    for sock in sockets:
        with contextlib.suppress(OSError):  # already closed
            sock.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def proxy(live_server) -> Iterator[CuttableProxy]:
    """A cuttable way to the live server; open pages at ``proxy.url + path`` (cookies are shared per host)."""
    cuttable = CuttableProxy(live_server.port)
    yield cuttable
    cuttable.close()


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="session", autouse=True)
def _expect_timeout() -> None:
    from playwright.sync_api import expect

    expect.set_options(timeout=15_000)


# -- per test: one browser context of one new user ----------------------------------------------------
class User:
    """One user's browser (a Playwright context), signed up through the real form.

    ``page`` is the first tab; ``new_tab()`` opens more. The API helpers go through the context's
    request client, which shares the tab's cookies, with the page's CSRF token.
    """

    def __init__(self, context: Any, base_url: str, username: str, password: str):
        self.context = context
        self.base_url = base_url
        self.username = username
        self.password = password
        self.page = context.new_page()
        self.csrf = ""
        self.user_id = ""
        self.page_errors: list[str] = []
        self.csp_violations: list[str] = []
        self.dialogs: list[str] = []
        self._watch(self.page)
        context.on("page", self._watch)

    def _watch(self, page: Any) -> None:
        if getattr(page, "_epm_watched", False):
            return
        page._epm_watched = True
        page.on("pageerror", lambda error: self.page_errors.append(f"{page.url}: {error}"))
        # Chromium reports every Content-Security-Policy violation on the console: none may happen.
        page.on("console", lambda message: self.csp_violations.append(f"{page.url}: {message.text}")
                if "Content Security Policy" in message.text else None)

        def dialog(d: Any) -> None:
            self.dialogs.append(d.message)
            d.dismiss()

        page.on("dialog", dialog)

    def signup(self) -> User:
        page = self.page
        page.goto("/signup")
        page.get_by_label("Username").fill(self.username)
        page.get_by_label("Password").fill(self.password)
        page.get_by_role("button", name="Create account").click()
        page.wait_for_url(lambda url: "/signup" not in url)
        self.refresh_tokens(page)
        return self

    def refresh_tokens(self, page: Any) -> None:
        self.csrf = page.locator('meta[name="csrf-token"]').get_attribute("content")
        user_meta = page.locator('meta[name="epm-user"]')
        if user_meta.count():
            self.user_id = user_meta.get_attribute("content")

    def new_tab(self, path: str | None = None) -> Any:
        page = self.context.new_page()
        self._watch(page)
        if path:
            page.goto(path)
        return page

    # -- the API, as the signed-in browser ----------------------------------------------------------
    def api(self, method: str, path: str, json: Any = None, expect_status: int | None = None) -> Any:
        headers = {"X-CSRFToken": self.csrf}
        response = self.context.request.fetch(self.base_url + path, method=method, headers=headers,
                                              data=json if json is not None else None)
        if expect_status is not None:
            assert response.status == expect_status, f"{method} {path}: {response.status} {response.text()[:500]}"
        return response.json() if "json" in (response.headers.get("content-type") or "") else response.text()

    def create_session(self, **overrides: Any) -> dict[str, Any]:
        return self.api("POST", "/api/sessions", {**SESSION, **overrides}, expect_status=201)["session"]

    def start(self, session_id: int, operation: str) -> dict[str, Any]:
        return self.api("POST", f"/api/sessions/{session_id}/{operation}", {}, expect_status=202)["job"]

    def start_demo(self, **params: Any) -> dict[str, Any]:
        body = {"job_type": "demo_countdown", "params": params}
        return self.api("POST", "/api/background-jobs", body, expect_status=202)["job"]

    def job(self, job_id: str) -> dict[str, Any]:
        return self.api("GET", f"/api/background-jobs/{job_id}", expect_status=200)["job"]

    def cancel(self, job_id: str) -> None:
        self.api("POST", f"/api/background-jobs/{job_id}/cancel", {}, expect_status=202)

    def wait_terminal(self, job_id: str, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if job["terminal"]:
                return job
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} still {job['status']} after {timeout}s")
            time.sleep(0.2)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text)[:120]


def screenshot(page: Any, name: str) -> Path:
    """Save a full-page screenshot of ``page`` as ``SCREENS/<name>.png`` and return its path."""
    SCREENS.mkdir(parents=True, exist_ok=True)
    path = SCREENS / f"{_slug(name)}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def new_user(browser: Any, live_server: LiveServer, **context_options: Any) -> User:
    context = browser.new_context(base_url=live_server.url, viewport={"width": 1280, "height": 800},
                                  **context_options)
    username = f"b{uuid.uuid4().hex[:10]}"
    return User(context, live_server.url, username, "password123").signup()


def watched_user(browser: Any, server: LiveServer) -> User:
    """``new_user`` whose pages' Content-Security-Policy violations are collected in ``.csp`` (a ``CspWatch``)."""
    person = new_user(browser, server)
    person.csp = CspWatch(person.context)
    return person


@pytest.fixture
def user(request, browser, live_server) -> Iterator[User]:
    """A freshly signed-up user in a new browser context; screenshots of every tab if the test fails."""
    person = new_user(browser, live_server)
    yield person
    if request.node.stash.get(_FAILED, False):
        for number, page in enumerate(person.context.pages):
            try:
                path = screenshot(page, f"FAIL-{request.node.name}-{number}")
                print(f"screenshot of tab {number} ({page.url}): {path}")
            except Exception as exc:  # a closed or crashed tab must not hide the test's own failure
                print(f"no screenshot of tab {number}: {exc}")
        if person.page_errors:
            print("uncaught errors in the page:", *person.page_errors, sep="\n  ")
    person.context.close()
    assert not person.csp_violations, "Content-Security-Policy violations:\n" + "\n".join(person.csp_violations)


@pytest.fixture
def make_user(request, browser, live_server) -> Iterator[Any]:
    """A factory for more users (or one with other context options, e.g. ``java_script_enabled=False``)."""
    made: list[User] = []

    def make(**context_options: Any) -> User:
        person = new_user(browser, live_server, **context_options)
        made.append(person)
        return person

    yield make
    for person in made:
        if request.node.stash.get(_FAILED, False):
            for number, page in enumerate(person.context.pages):
                try:
                    print(f"screenshot: {screenshot(page, f'FAIL-{request.node.name}-{person.username}-{number}')}")
                except Exception as exc:
                    print(f"no screenshot: {exc}")
        person.context.close()


@pytest.fixture
def job_store(live_server, key_prefix) -> Iterator[Any]:
    """The server's JobStore, for writing a job state the way a runner does (e.g. a hostile message)."""
    import redis

    from epm.jobs.store import JobStore

    client = redis.Redis.from_url(real_backends()[0], decode_responses=True)
    yield JobStore(client, prefix=key_prefix)
    client.close()


@pytest.fixture
def db_job(browser_db) -> Any:
    """Read a job's durable row from PostgreSQL: ``db_job(id) -> dict | None``."""
    import psycopg
    from psycopg.rows import dict_row

    def read(job_id: str) -> dict[str, Any] | None:
        with psycopg.connect(browser_db, row_factory=dict_row) as conn:
            return conn.execute("SELECT * FROM background_jobs WHERE id = %s", (job_id,)).fetchone()

    return read


# -- page helpers --------------------------------------------------------------------------------------
# Headless Chromium has every tab visible and notifications denied: this script lets a test hide a tab
# (``hide(page)``) and records the notifications a page shows, starting with permission "default".
PAGE_SHIM = """
(() => {
  let hidden = false;
  Object.defineProperty(Document.prototype, "hidden", { configurable: true, get: () => hidden });
  Object.defineProperty(Document.prototype, "visibilityState", { configurable: true,
    get: () => (hidden ? "hidden" : "visible") });
  window.__epmSetHidden = (value) => {
    hidden = value;
    document.dispatchEvent(new Event("visibilitychange"));
  };
  window.__epmNotifications = [];
  let permission = "default";
  class RecordingNotification {
    constructor(title, options) {
      window.__epmNotifications.push({ title, body: (options && options.body) || "" });
    }
    static get permission() { return permission; }
    static async requestPermission() { permission = "granted"; return permission; }
    close() {}
  }
  window.Notification = RecordingNotification;
})();
"""


def use_page_shim(context: Any) -> None:
    """Install ``PAGE_SHIM`` in every page the context opens from now on."""
    context.add_init_script(PAGE_SHIM)


def set_hidden(page: Any, hidden: bool) -> None:
    page.evaluate("(value) => window.__epmSetHidden(value)", hidden)


class StreamCounter:
    """Counts the user-stream requests (``/api/background-jobs/events``) a browser context has open."""

    def __init__(self, context: Any):
        self.started = 0
        self._open: set[Any] = set()
        context.on("request", self._request)
        context.on("requestfinished", self._ended)
        context.on("requestfailed", self._ended)

    def _request(self, request: Any) -> None:
        if EVENTS_PATH in request.url:
            self.started += 1
            self._open.add(request)

    def _ended(self, request: Any) -> None:
        self._open.discard(request)

    @property
    def open(self) -> int:
        return len(self._open)


def transports(pages: list[Any]) -> list[str | None]:
    """Each tab's ``<html data-jobs-transport>``."""
    return [page.evaluate("document.documentElement.dataset.jobsTransport || null") for page in pages]


def wait_ready(page: Any) -> None:
    """Wait until jobs.js has painted from storage and attached its transport."""
    from playwright.sync_api import expect

    expect(page.locator("html")).to_have_attribute("data-jobs-ready", "1")


def tracker_job(page: Any, job_id: str) -> Any:
    return page.locator(f'#job-tracker article.tracker-job[data-job-id="{job_id}"]')


def percent_of(locator: Any) -> int:
    """The number in a ``.tracker-percent`` like "45%"."""
    return int(locator.inner_text().strip().rstrip("%"))


def expect_tracker_ended(page: Any, job_id: str, outcome: str, timeout: float = 15_000) -> None:
    """Wait until the tracker no longer shows ``job_id`` running: its entry gone (the tracker hidden), or
    showing ``outcome`` (tracker.js keeps a job that ended on this page, with its outcome)."""
    page.wait_for_function("""([id, outcome]) => {
        const tracker = document.getElementById("job-tracker");
        const entry = tracker.querySelector(`[data-job-id="${id}"]`);
        if (!entry || tracker.hidden) return true;
        const shown = entry.querySelector(".tracker-outcome");
        return Boolean(shown) && !entry.querySelector(".tracker-percent") && shown.textContent.trim() === outcome;
    }""", arg=[job_id, outcome], timeout=timeout)


def inject_message(job_store, job_id: str, message: str) -> None:
    """Write a progress message into a running job the way its runner does (a newer seq, published)."""
    from epm.jobs.job import next_seq

    job = job_store.load(job_id)
    job.message = message
    job.seq = next_seq(job.seq)
    job_store.write(job, Guard.RECORD)


# -- accessibility: axe-core from npm (``npm ci``), injected into the page under test -----------------------
AXE = Path(__file__).parents[2] / "node_modules" / "axe-core" / "axe.min.js"
AXE_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa", "best-practice"]


def axe_violations(page: Any) -> list[dict[str, Any]]:
    """axe-core's violations on ``page`` as it is now (WCAG 2.2 AA and best practices), one dict per rule."""
    assert AXE.exists(), f"axe-core is missing at {AXE}: run `npm ci` (make test does)"
    if not page.evaluate("Boolean(window.axe)"):
        # Through the DevTools protocol, which the page's Content-Security-Policy does not govern: a <script>
        # tag of the test's own would be (rightly) refused by the strict script-src and reported as a violation.
        page.evaluate(AXE.read_text() + "\n;undefined")
    results = page.evaluate("(tags) => axe.run(document, { runOnly: { type: 'tag', values: tags },"
                            " resultTypes: ['violations'] })", AXE_TAGS)
    return [{"id": v["id"], "impact": v["impact"], "help": v["help"],
             "nodes": [node["target"] for node in v["nodes"]][:5]} for v in results["violations"]]


class CspWatch:
    """Collects Content-Security-Policy violations a context's pages report in their consoles."""

    def __init__(self, context: Any):
        self.violations: list[str] = []
        context.on("console", self._console)
        for page in context.pages:
            page.on("console", self._console)

    def _console(self, message: Any) -> None:
        if "Content Security Policy" in message.text or "Content-Security-Policy" in message.text:
            self.violations.append(message.text)
