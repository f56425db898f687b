"""The research fetcher's URL policy: every range that reaches this host or a private network is refused."""

from __future__ import annotations

import ipaddress

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from epm.operations.fetch import FetchFailed, FetchPolicy, PageFetcher, address_refusal, check_source_url

PRIVATE_V4 = ["127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16", "100.64.0.0/10",
              "0.0.0.0/8"]


@pytest.mark.parametrize(("address", "refusal"), [
    ("2002:7f00:1::1", "a 6to4 address (around 127.0.0.1)"),
    ("2002:5db8:d70e::1", "a 6to4 address (around 93.184.215.14)"),
    ("fec0::1", "a site-local address"),
    ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "a Teredo address (around 192.0.2.45)"),
    ("64:ff9b::7f00:1", "a NAT64 address (around 127.0.0.1)"),
    ("64:ff9b:1::a00:1", "a NAT64 address (around 10.0.0.1)"),
    ("::127.0.0.1", "an IPv4-compatible address (around 127.0.0.1)"),
    ("::ffff:0:a00:1", "an IPv4-compatible address (around 10.0.0.1)"),
    ("::ffff:10.1.2.3", "a private address"),
    ("::ffff:8.8.8.8", None),
])
def test_transition_and_site_local_addresses_are_refused(address, refusal):
    assert address_refusal(address) == refusal


def test_transition_addresses_stay_refused_when_private_ones_are_allowed():
    assert address_refusal("2002:7f00:1::1", allow_private=True) == "a 6to4 address (around 127.0.0.1)"
    assert address_refusal("fec0::1", allow_private=True) == "a site-local address"


@pytest.mark.parametrize(("url", "words"), [
    ("http://[2002:7f00:1::1]/", "6to4"), ("http://[fec0::1]/", "site-local"),
    ("http://2130706433/", "127.0.0.1 is a loopback"), ("http://0x7f.1/", "127.0.0.1 is a loopback"),
    ("http://127.1/", "loopback"), ("http://0177.0.0.1/", "address"), ("http://localhost:8000/", "local name"),
    ("http://metadata.internal/", "local name"), ("http://a\u0000b.example/", "control characters"),
    ("javascript:alert(1)", "Only http"), ("ftp://example.com/", "Only http"),
    ("http://user:pw@example.com/", "user name"), ("http://[::1", "not a valid"), ("http:///path", "no host"),
])
def test_check_source_url_explains_each_refusal(url, words):
    reason = check_source_url(url)
    assert reason is not None and words in reason


@pytest.mark.parametrize("url", ["https://example.com/market", "http://93.184.215.14/", "http://[2606:4700::1]/",
                                 "https://1.2.3.4.example.com/"])
def test_check_source_url_accepts_public_web_addresses(url):
    assert check_source_url(url) is None


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(PRIVATE_V4).flatmap(
    lambda net: st.integers(0, ipaddress.ip_network(net).num_addresses - 1).map(
        lambda offset: ipaddress.ip_network(net)[offset])))
def test_every_private_ipv4_is_refused_in_every_wrapping(ipv4):
    v4 = int(ipv4)
    wrappings = [str(ipv4), f"::ffff:{ipv4}", str(ipaddress.IPv6Address((0x2002 << 112) | (v4 << 80) | 1)),
                 str(ipaddress.IPv6Address((0x64FF9B << 96) | v4)),
                 str(ipaddress.IPv6Address((0x20010000 << 96) | (0xFFFFFFFF ^ v4)))]
    for address in wrappings:
        assert address_refusal(address) is not None, address
        host = f"[{address}]" if ":" in address else address
        assert check_source_url(f"http://{host}/") is not None, address
    assert check_source_url(f"http://{v4}/") is not None  # the decimal spelling


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=120) | st.from_regex(r"\A(https?|ftp|javascript|data):/{0,3}[^\s]{0,60}\Z"))
def test_check_source_url_never_raises_and_accepts_only_clean_http_urls(url):
    reason = check_source_url(url)
    assert reason is None or isinstance(reason, str) and reason
    if reason is None:
        parsed = httpx.URL(url.strip())
        assert parsed.scheme in ("http", "https") and parsed.host
        assert not any(ord(char) < 0x21 for char in url.strip())


def _redirecting_to(location: str) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/good":
            return httpx.Response(200, html="<title>Good</title><p>fine</p>")
        return httpx.Response(302, headers={"Location": location})

    return httpx.MockTransport(handler)


@pytest.mark.parametrize("location", ["javascript:alert(1)", "data:text/html,<b>x</b>", "JAVASCRIPT:x",
                                      "file:///etc/passwd", "gopher://example.com/"])
def test_redirect_to_a_non_http_scheme_fails_that_source_with_a_reason(location):
    fetcher = PageFetcher(FetchPolicy(), resolve=lambda _host, _port: ["93.184.215.14"],
                          transport=_redirecting_to(location))
    with fetcher:
        with pytest.raises(FetchFailed) as caught:
            fetcher.fetch("http://example.com/away")
        assert fetcher.fetch("http://example.com/good").status == 200  # the next source still reads
    assert caught.value.code in ("invalid_redirect", "invalid_url")
    assert "http" in caught.value.reason


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(st.sampled_from(["name", "business", "objectives", "budget", "deadline", "team_size",
                                        "source_urls", "other"]),
                       st.text(max_size=30) | st.integers() | st.none() | st.lists(st.text(max_size=20), max_size=3)
                       | st.floats(allow_nan=True) | st.booleans(), max_size=7))
def test_session_form_answers_a_page_never_a_server_error(auth_client, fields):
    form = {key: value if isinstance(value, str) else "\n".join(value) if isinstance(value, list) else str(value)
            for key, value in fields.items()}
    response = auth_client.post("/sessions/new", data=form)
    assert response.status_code in (302, 400, 422), response.status_code
    if response.status_code != 302:
        assert "text/html" in response.content_type
