"""Research fetching and extraction against a real HTTP server on 127.0.0.1.

The server runs in a thread for the module; the tests call the fetcher and the extraction
directly with a config mapping, without the app. Loopback is allowed (``EPM_RESEARCH_ALLOW_PRIVATE``)
except in the tests of the address checks.
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from epm.operations.fetch import FetchFailed, FetchPolicy, PageFetcher, address_refusal, resolve_host
from epm.operations.inputs import SessionBrief
from epm.operations.research import build_report, extract_page, failed_source, read_source
from tests.support import serve_http

PAGE = (Path(__file__).parent / "data" / "operations" / "bike_shop.html").read_bytes()
MAX_BYTES = 20_000
PUBLIC_ADDRESS = "93.184.215.14"  # a global address; the routing transport below sends it to 127.0.0.1


class _Handler(BaseHTTPRequestHandler):
    release = threading.Event()

    def log_message(self, format: str, *args: object) -> None:  # keep the test output quiet
        return None

    def _send(self, status: int, body: bytes, content_type: str = "text/html; charset=utf-8",
              headers: dict[str, str] | None = None, length: bool = True) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        if length:
            self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802  (the name http.server looks for)
        port = self.server.server_address[1]
        path = self.path
        if path == "/good":
            self._send(200, PAGE)
        elif path == "/notes.txt":
            self._send(200, b"Market notes\n\nCyclists in Utrecht cycle daily. Cyclists want a fast repair.\n",
                       "text/plain; charset=utf-8")
        elif path == "/slow":
            # Never answers: holds the request far longer than the tests' timeout, until the module ends.
            self.release.wait(10)
        elif path == "/missing":
            self._send(404, b"<h1>Not found</h1>")
        elif path == "/logo.png":
            self._send(200, b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, "image/png")
        elif path == "/data.json":
            self._send(200, b'{"title": "not a page"}', "application/json")
        elif path.startswith("/hop/"):
            left = int(path.rsplit("/", 1)[1])
            self._send(302, b"", headers={"Location": f"/hop/{left - 1}" if left > 1 else "/good"})
        elif path == "/huge":
            self._send(200, b"<p>" + b"word " * MAX_BYTES + b"</p>")
        elif path == "/huge-streamed":
            # No Content-Length: the size is only known while reading, so the cap must hold mid-stream.
            self._send(200, b"<p>" + b"word " * MAX_BYTES + b"</p>", length=False)
        elif path == "/to-loopback":
            self._send(302, b"", headers={"Location": f"http://127.0.0.1:{port}/good"})
        elif path == "/to-reserved":
            self._send(301, b"", headers={"Location": "http://240.0.0.1/"})
        else:
            self._send(500, b"unexpected path")


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with serve_http(_Handler) as url:
        yield url
        _Handler.release.set()


def config(**overrides) -> dict:
    return {"EPM_RESEARCH_TIMEOUT": 1.0, "EPM_RESEARCH_MAX_BYTES": MAX_BYTES, "EPM_RESEARCH_ALLOW_PRIVATE": True,
            **overrides}


def fetch(url: str, **overrides):
    with PageFetcher(FetchPolicy.from_config(config(**overrides))) as fetcher:
        return fetcher.fetch(url)


def failure(url: str, **overrides) -> FetchFailed:
    with pytest.raises(FetchFailed) as caught:
        fetch(url, **overrides)
    return caught.value


# -- fetching ------------------------------------------------------------------------------------

def test_good_page_is_fetched_and_extracted(server):
    page = fetch(f"{server}/good")
    assert page.status == 200 and page.content_type == "text/html" and page.redirects == ()
    entry = read_source(page)
    assert entry["ok"] and entry["title"] == "Utrecht E-Bike Repair & Rental"
    assert entry["description"].startswith("E-bike repair and rental for commuters in Utrecht")
    assert entry["headings"] == [{"level": 1, "text": "E-bike repair in Utrecht"},
                                 {"level": 2, "text": "Rental plans for commuters"},
                                 {"level": 3, "text": "Battery service"}]
    terms = [term["term"] for term in entry["key_terms"]]
    assert terms[:3] == ["battery", "e-bike", "repair"]
    assert "analytics" not in terms and "javascript" not in terms  # script and noscript are not text
    assert entry["word_count"] > 50


def test_plain_text_is_read_with_its_first_line_as_title(server):
    entry = read_source(fetch(f"{server}/notes.txt"))
    assert entry["title"] == "Market notes" and entry["headings"] == []
    assert entry["key_terms"][0] == {"term": "cyclists", "count": 2}


def test_slow_server_fails_with_a_timeout(server):
    failed = failure(f"{server}/slow", EPM_RESEARCH_TIMEOUT=0.3)
    assert failed.code == "timeout" and "did not answer within 0.3 seconds" in failed.reason


def test_error_status_is_recorded_with_the_status(server):
    failed = failure(f"{server}/missing")
    assert failed.code == "http_status" and failed.reason == "The server answered 404 Not Found."


@pytest.mark.parametrize(("path", "shown"), [("/logo.png", "image/png"), ("/data.json", "application/json")])
def test_response_that_is_not_a_page_is_refused(server, path, shown):
    failed = failure(f"{server}{path}")
    assert failed.code == "unsupported_type" and shown in failed.reason


def test_redirect_chain_is_followed_to_the_page(server):
    page = fetch(f"{server}/hop/3")
    assert page.final_url == f"{server}/good" and page.url == f"{server}/hop/3"
    assert page.redirects == (f"{server}/hop/3", f"{server}/hop/2", f"{server}/hop/1")
    assert read_source(page)["title"] == "Utrecht E-Bike Repair & Rental"


def test_more_than_five_redirects_are_refused(server):
    assert fetch(f"{server}/hop/5").final_url == f"{server}/good"
    failed = failure(f"{server}/hop/6")
    assert failed.code == "too_many_redirects" and "more than 5 times" in failed.reason


@pytest.mark.parametrize("path", ["/huge", "/huge-streamed"])
def test_body_larger_than_the_cap_is_refused(server, path):
    failed = failure(f"{server}{path}")
    assert failed.code == "too_large" and failed.reason == "It is larger than the 20 KB research reads per page."


# -- address checks ------------------------------------------------------------------------------

def test_loopback_address_is_refused_when_private_addresses_are_not_allowed(server):
    failed = failure(f"{server}/good", EPM_RESEARCH_ALLOW_PRIVATE=False)
    assert failed.code == "refused_address"
    assert failed.reason == "127.0.0.1 is a loopback address; research reads only public web sites."


def test_host_name_resolving_to_loopback_is_refused(server):
    port = server.rsplit(":", 1)[1]
    failed = failure(f"http://localhost:{port}/good", EPM_RESEARCH_ALLOW_PRIVATE=False)
    assert failed.code == "refused_address" and failed.reason.startswith("localhost resolves to ")


def test_every_resolved_address_is_checked_not_only_the_first():
    def resolve(host: str, port: int) -> list[str]:
        return [PUBLIC_ADDRESS, "10.1.2.3"]

    with PageFetcher(FetchPolicy(allow_private=False), resolve=resolve) as fetcher, \
            pytest.raises(FetchFailed) as caught:
        fetcher.fetch("http://mixed.example/")
    assert caught.value.code == "refused_address"
    assert "mixed.example resolves to 10.1.2.3, a private address" in caught.value.reason


def test_a_host_name_that_never_resolves_fails_within_the_fetch_timeout():
    released = threading.Event()

    def hung_dns(host: str, port: int) -> list[str]:
        released.wait(10)  # a DNS server that does not answer
        return [PUBLIC_ADDRESS]

    began = time.monotonic()
    with PageFetcher(FetchPolicy(timeout=0.3), resolve=hung_dns) as fetcher, pytest.raises(FetchFailed) as caught:
        fetcher.fetch("http://slow-dns.example/")
    released.set()
    assert time.monotonic() - began < 2
    assert caught.value.code == "timeout"
    assert caught.value.reason == "Looking up the host name slow-dns.example took longer than 0.3 seconds."


class _RouteToLocal(httpx.BaseTransport):
    """Sends connections for ``PUBLIC_ADDRESS`` to 127.0.0.1: a public web site that is really the test server."""

    def __init__(self, **options) -> None:
        self.inner = httpx.HTTPTransport(**options)
        self.hosts: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.hosts.append(request.headers["Host"])
        if request.url.host == PUBLIC_ADDRESS:
            request.url = request.url.copy_with(host="127.0.0.1")
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


def test_redirect_to_private_address_is_refused(server):
    port = int(server.rsplit(":", 1)[1])
    transport = _RouteToLocal()

    def resolve(host: str, port: int) -> list[str]:
        return [PUBLIC_ADDRESS] if host == "public.example" else resolve_host(host, port)

    with PageFetcher(FetchPolicy(timeout=2, allow_private=False), resolve=resolve, transport=transport) as fetcher:
        assert fetcher.fetch(f"http://public.example:{port}/good").status == 200
        with pytest.raises(FetchFailed) as caught:
            fetcher.fetch(f"http://public.example:{port}/to-loopback")
    assert caught.value.code == "refused_address"
    assert caught.value.reason == (f"It redirected to http://127.0.0.1:{port}/good, but 127.0.0.1 is a loopback "
                                   "address; research reads only public web sites.")
    # The first hop went to the checked address, with the site's own name as Host; the refused one never left.
    assert transport.hosts == [f"public.example:{port}", f"public.example:{port}"]


def _make_certificates(folder: Path) -> tuple[Path, Path, Path]:
    """A throw-away CA and a certificate it signed for ``public.example``: (CA, certificate, key)."""
    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
            "-subj", "/CN=epm test CA", "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "site.key", "-out", "site.csr",
            "-subj", "/CN=public.example")
    (folder / "site.ext").write_text("subjectAltName=DNS:public.example\nbasicConstraints=CA:FALSE\n"
                                     "extendedKeyUsage=serverAuth\nauthorityKeyIdentifier=keyid,issuer\n")
    openssl("x509", "-req", "-in", "site.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "site.pem", "-days", "2", "-extfile", "site.ext")
    return folder / "ca.pem", folder / "site.pem", folder / "site.key"


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory) -> Iterator[tuple[int, Path]]:
    """The test server over HTTPS with a certificate for ``public.example``: (port, CA file)."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    ca, certificate, key = _make_certificates(tmp_path_factory.mktemp("tls"))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificate, key)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield httpd.server_address[1], ca
    httpd.shutdown()
    httpd.server_close()


def test_https_to_a_checked_address_still_verifies_the_sites_certificate(tls_server):
    port, ca = tls_server

    def resolve(host: str, port: int) -> list[str]:
        return [PUBLIC_ADDRESS]

    transport = _RouteToLocal(verify=ssl.create_default_context(cafile=str(ca)))
    with PageFetcher(FetchPolicy(timeout=5), resolve=resolve, transport=transport) as fetcher:
        # Connected to the address, but TLS checks the certificate against the site's name.
        assert read_source(fetcher.fetch(f"https://public.example:{port}/good"))["title"] == \
            "Utrecht E-Bike Repair & Rental"
        with pytest.raises(FetchFailed) as caught:
            fetcher.fetch(f"https://other.example:{port}/good")
    assert caught.value.code == "certificate_invalid"
    assert caught.value.reason == "The security certificate of other.example could not be verified."


def test_reserved_address_is_refused_even_when_private_addresses_are_allowed(server):
    failed = failure(f"{server}/to-reserved")
    assert failed.code == "refused_address" and "240.0.0.1 is a reserved address" in failed.reason
    assert failure("http://0.0.0.0/").reason.startswith("0.0.0.0 is an unspecified address")


@pytest.mark.parametrize(("address", "refusal"), [
    ("127.0.0.1", "a loopback address"), ("::1", "a loopback address"), ("10.0.0.8", "a private address"),
    ("172.16.5.4", "a private address"), ("192.168.1.1", "a private address"), ("fd00::1", "a private address"),
    ("169.254.169.254", "a link-local address"), ("fe80::1", "a link-local address"),
    ("224.0.0.1", "a multicast address"), ("ff02::1", "a multicast address"), ("0.0.0.0", "an unspecified address"),
    ("::", "an unspecified address"), ("240.0.0.1", "a reserved address"), ("100.64.0.1", "a non-public address"),
    ("::ffff:127.0.0.1", "a loopback address"), ("0.1.2.3", "an unspecified address"),
    ("93.184.215.14", None), ("2606:4700::6810:85e5", None),
])
def test_address_refusal_names_the_kind_of_address(address, refusal):
    assert address_refusal(address, allow_private=False) == refusal


def test_allowing_private_addresses_still_refuses_multicast_reserved_and_unspecified():
    assert address_refusal("127.0.0.1", allow_private=True) is None
    assert address_refusal("10.0.0.8", allow_private=True) is None
    assert address_refusal("224.0.0.1", allow_private=True) == "a multicast address"
    assert address_refusal("240.0.0.1", allow_private=True) == "a reserved address"
    assert address_refusal("0.0.0.0", allow_private=True) == "an unspecified address"


@pytest.mark.parametrize("url", ["ftp://example.com/file", "file:///etc/passwd", "not a url", "http:///path"])
def test_addresses_that_are_not_web_addresses_are_refused(url):
    assert failure(url).code in ("invalid_url", "unresolvable")


# -- extraction and the report -------------------------------------------------------------------

def test_extraction_falls_back_to_the_first_heading_and_og_description():
    html = b'<html><head><meta property="og:description" content=" A  shop. "></head>' \
           b"<body><h2>Second level</h2><h1>Main</h1><p>Bikes bikes bike</p></body></html>"
    entry = extract_page(html, "text/html")
    assert entry["title"] == "Second level" and entry["description"] == "A shop."
    assert [heading["level"] for heading in entry["headings"]] == [2, 1]
    assert {"term": "bike", "count": 3} in entry["key_terms"]


def test_report_ranks_terms_by_how_many_pages_use_them(server):
    good = read_source(fetch(f"{server}/good"))
    notes = read_source(fetch(f"{server}/notes.txt"))
    broken = failed_source(f"{server}/missing", failure(f"{server}/missing"))
    report = build_report(SessionBrief(id=7, name="Bikes"), [good, notes, broken])
    assert (report["read"], report["failed"]) == (2, 1)
    assert report["sources"][2] == {"url": f"{server}/missing", "ok": False, "error_code": "http_status",
                                    "error": "The server answered 404 Not Found."}
    # The page's body has "repair" 4 times and "repairs" once (counted with it); the notes once.
    assert report["key_terms"][0] == {"term": "repair", "count": 6, "pages": 2}
    assert report["summary"].startswith("Read 2 of 3 sources: 1 key fact. ")
    assert report == build_report(SessionBrief(id=7, name="Bikes"), [good, notes, broken])


# -- summaries and key facts, from the saved pages of the coffee-chain session --------------------
COFFEE = Path(__file__).parent / "data" / "coffee"


def _coffee_entry(name: str, url: str) -> dict:
    entry = {"url": url, "ok": True, "final_url": url}
    entry.update(extract_page((COFFEE / name).read_bytes(), "text/html; charset=utf-8"))
    entry["facts"] = [{**fact, "url": url, "source": entry["title"]} for fact in entry["facts"]]
    return entry


def test_facts_with_figures_prices_percentages_dates_and_places_are_extracted_from_a_saved_page():
    entry = extract_page((COFFEE / "denver_market.html").read_bytes(), "text/html")
    by_text = {fact["text"]: fact["kinds"] for fact in entry["facts"]}
    ticket = "The average ticket at independent specialty cafés in Denver is $7.80, against $6.10 at national chains."
    assert by_text[ticket] == ["price", "place"]
    growth = next(kinds for text, kinds in by_text.items() if text.startswith("Specialty coffee sales in Denver"))
    assert growth == ["percentage", "date", "place"]
    assert any("14,000 downtown residents" in text for text in by_text)
    # Neither the script ("99%"), nor the navigation or the footer, nor a sentence without a fact.
    assert not any("99%" in text or "©" in text or "landlords" in text for text in by_text)


def test_each_page_gets_an_extractive_summary_in_its_own_order():
    entry = extract_page((COFFEE / "mobile_ordering.html").read_bytes(), "text/html")
    assert entry["summary"][0] == "Mobile orders now account for 31% of morning sales at specialty coffee chains " \
                                  "with an app."
    assert 1 <= len(entry["summary"]) <= 3
    page = (COFFEE / "mobile_ordering.html").read_text()
    positions = [page.index(sentence[:40]) for sentence in entry["summary"]]
    assert positions == sorted(positions)


def test_report_deduplicates_facts_across_pages_and_keeps_each_source_link():
    urls = ["https://research.example/denver-market", "https://research.example/mobile-ordering",
            "https://research.example/wholesale"]
    sources = [_coffee_entry(name, url) for name, url in zip(
        ("denver_market.html", "mobile_ordering.html", "wholesale.html"), urls, strict=True)]
    report = build_report(SessionBrief(id=8, name="Coffee"), sources)
    texts = [fact["text"] for fact in report["facts"]]
    # The mobile page says the 31% twice in other words; the report says it once.
    assert sum("31% of morning sales" in text for text in texts) == 1
    assert any("$7.80" in text for text in texts) and any("$11 and $14" in text for text in texts)
    assert {fact["url"] for fact in report["facts"]} == set(urls)
    assert all(fact["source"] and fact["kinds"] for fact in report["facts"])
    assert report["overview"] and report["summary"].startswith(f"Read 3 of 3 sources: {len(texts)} key facts. ")
    assert "paragraphs" not in report["sources"][0]


def test_sentences_are_split_without_breaking_abbreviations_or_prices():
    from epm.operations.facts import sentences

    assert sentences("Prices rose 3.5% in Jan. 2025 at St. Paul cafés. The U.S. market grew. Next one!") == [
        "Prices rose 3.5% in Jan. 2025 at St. Paul cafés.", "The U.S. market grew.", "Next one!"]
