"""Fetching a web page for research, safely: public addresses only, bounded in time, size and redirects.

A session's source URLs are typed by users, so the server must not become their way into the
private network (SSRF). Every host name is resolved here and *every* address it resolves to is
checked; the connection then goes to the checked address itself (the Host header and TLS name
stay the original), so a second DNS answer cannot swap in another address. Redirects are followed
by hand, one hop at a time, each checked the same way.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any

import httpx

ALLOWED_TYPES = ("text/html", "application/xhtml+xml", "text/plain")
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
USER_AGENT = "epm-research/0.1 (+https://github.com/epm)"

Resolver = Callable[[str, int], list[str]]
# 0.x.x.x reaches this host on Linux, like 0.0.0.0.
_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")


class FetchFailed(Exception):
    """A page could not be read; ``reason`` says why in words a user can read."""

    def __init__(self, reason: str, code: str):
        super().__init__(reason)
        self.reason = reason
        self.code = code


@dataclass(frozen=True)
class FetchPolicy:
    """The limits of one fetch: seconds for the whole fetch, bytes of body, redirects, address ranges."""

    timeout: float = 10.0
    max_bytes: int = 2 * 1024 * 1024
    allow_private: bool = False
    max_redirects: int = 5

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> FetchPolicy:
        return cls(timeout=float(config.get("EPM_RESEARCH_TIMEOUT", cls.timeout)),
                   max_bytes=int(config.get("EPM_RESEARCH_MAX_BYTES", cls.max_bytes)),
                   allow_private=bool(config.get("EPM_RESEARCH_ALLOW_PRIVATE", False)))


@dataclass(frozen=True)
class Page:
    """A page as fetched: where it was asked for, where it ended up, and its body."""

    url: str
    final_url: str
    status: int
    content_type: str
    charset: str | None
    body: bytes
    redirects: tuple[str, ...] = ()


# IPv6 ranges that carry an IPv4 address inside and lead to it through a relay or translator: traffic to
# them can come out on the private IPv4 network (or this host), whatever the IPv4 address looks like.
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
# ::a.b.c.d (IPv4-compatible, deprecated) and ::ffff:0:a.b.c.d (IPv4-translated, SIIT).
_EMBEDDING = (ipaddress.ip_network("::/96"), ipaddress.ip_network("::ffff:0:0:0/96"))


def embedded_ipv4(ip: ipaddress.IPv6Address) -> tuple[str, ipaddress.IPv4Address] | None:
    """The IPv4 address an IPv6 address carries, with the mechanism's name, or None.

    ``ipaddress`` knows IPv4-mapped, 6to4 and Teredo; NAT64, IPv4-compatible and IPv4-translated
    addresses keep it in their last 32 bits.
    """
    if ip.ipv4_mapped is not None:
        return "an IPv4-mapped address", ip.ipv4_mapped
    if ip.sixtofour is not None:
        return "a 6to4 address", ip.sixtofour
    if ip.teredo is not None:
        return "a Teredo address", ip.teredo[1]
    last32 = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if any(ip in network for network in _NAT64):
        return "a NAT64 address", last32
    if any(ip in network for network in _EMBEDDING) and int(ip) > 1:  # not :: or ::1
        return "an IPv4-compatible address", last32
    return None


def address_refusal(address: str, allow_private: bool = False) -> str | None:
    """Why ``address`` may not be fetched ("a loopback address"), or None when it may.

    ``allow_private`` lets private, loopback and link-local addresses through (a test or an
    intranet deployment); multicast, reserved and unspecified addresses are never web servers, and
    IPv6 transition addresses (6to4, Teredo, NAT64, IPv4-compatible) and site-local ones are never
    fetched: they can lead to this host or the private network around it.
    """
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if ip.version == 6:
        embedded = embedded_ipv4(ip)
        if embedded is not None:
            kind, ipv4 = embedded
            if kind != "an IPv4-mapped address":
                return f"{kind} (around {ipv4})"
            ip = ipv4
        elif ip.is_site_local:
            return "a site-local address"
    if ip.is_unspecified or ip in _THIS_NETWORK:
        return "an unspecified address"
    if ip.is_multicast:
        return "a multicast address"
    # Loopback and link-local before reserved: ::1 and fe80::/10 lie inside IPv6's reserved ranges.
    local = "a loopback address" if ip.is_loopback else "a link-local address" if ip.is_link_local else None
    if local:
        return None if allow_private else local
    if ip.is_reserved:
        return "a reserved address"
    if allow_private:
        return None
    if ip.is_private:
        return "a private address"
    if not ip.is_global:
        return "a non-public address"
    return None


_LOCAL_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback")
_LOCAL_SUFFIXES = (".localhost", ".local", ".internal", ".home.arpa", ".localdomain")
MAX_URL_LENGTH = 2000


def check_source_url(url: str, allow_private: bool = False) -> str | None:
    """Why ``url`` cannot be a research source, in words for a user, or None when it can.

    The policy without the network: an http or https address of at most 2,000 characters, with a
    host, no user name or password, no whitespace or control characters, not a local name
    (``localhost``, ``*.internal`` ...), and, when the host is an IP address in any spelling
    (``2130706433``, ``0x7f.1``, ``[2002:7f00:1::1]``), one that ``address_refusal`` accepts. At fetch
    time every address the name resolves to is checked again.
    """
    if not isinstance(url, str) or not url.strip():
        return "Give an http:// or https:// address."
    url = url.strip()
    if len(url) > MAX_URL_LENGTH:
        return f"The address is longer than {MAX_URL_LENGTH:,} characters."
    if any(ord(char) < 0x21 or 0x7F <= ord(char) < 0xA0 or 0xD800 <= ord(char) < 0xE000 for char in url):
        return "The address contains spaces or control characters."
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError):
        return "The address is not a valid web address."
    if parsed.scheme not in ("http", "https"):
        return "Only http:// and https:// addresses can be researched."
    if not parsed.host:
        return "The address has no host name."
    if parsed.userinfo:
        return "The address may not carry a user name or password."
    host = parsed.host.rstrip(".").lower()
    if host in _LOCAL_NAMES or host.endswith(_LOCAL_SUFFIXES):
        return f"{host} is a local name; research reads only public web sites."
    literal = _ip_literal(host)
    if literal is not None:
        refusal = address_refusal(literal, allow_private)
        if refusal:
            return f"{literal} is {refusal}; research reads only public web sites."
    return None


def _ip_literal(host: str) -> str | None:
    """The address a host written as an IP literal stands for (in the C library's spellings too), or None."""
    try:
        return str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        pass
    if not re.fullmatch(r"[0-9a-fx.]+", host) or not re.search(r"\d", host):
        return None
    try:
        # inet_aton reads 127.1, 2130706433, 0x7f.0.0.1 and 0177.0.0.1 as the resolver would.
        return socket.inet_ntoa(socket.inet_aton(host))
    except OSError:
        return None


def resolve_host(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to, in the resolver's order, without duplicates."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]).split("%", 1)[0] for info in infos))


class PageFetcher:
    """Fetches pages under a ``FetchPolicy``; ``fetch`` returns a ``Page`` or raises ``FetchFailed``.

    ``resolve`` and ``transport`` are the seams for name resolution and the network (tests route
    a public-looking address to a local server with them).
    """

    def __init__(self, policy: FetchPolicy, *, resolve: Resolver = resolve_host,
                 transport: httpx.BaseTransport | None = None):
        self.policy = policy
        self._resolve = resolve
        # No proxies from the environment (the connection must go to the checked address) and no
        # kept-alive connections (one is keyed by address and could carry another host's TLS name).
        self._client = httpx.Client(transport=transport, trust_env=False, follow_redirects=False,
                                    limits=httpx.Limits(max_keepalive_connections=0),
                                    headers={"User-Agent": USER_AGENT,
                                             "Accept": "text/html,application/xhtml+xml,text/plain;q=0.9"})

    def __enter__(self) -> PageFetcher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._client.close()

    def fetch(self, url: str) -> Page:
        """Fetch ``url``, following at most ``max_redirects`` redirects, each to a checked address."""
        deadline = time.monotonic() + self.policy.timeout
        current = _parse(url, "The address is not a valid web address.")
        visited: list[str] = []
        for _hop in range(self.policy.max_redirects + 1):
            prefix = f"It redirected to {current}, but " if visited else ""
            address = self._checked_address(current, prefix, deadline)
            outcome = self._get(current, address, deadline)
            if isinstance(outcome, Page):
                return Page(url=url, final_url=str(current), status=outcome.status,
                            content_type=outcome.content_type, charset=outcome.charset, body=outcome.body,
                            redirects=tuple(visited))
            visited.append(str(current))
            current = outcome
        raise FetchFailed(f"It redirected more than {self.policy.max_redirects} times.", "too_many_redirects")

    def _checked_address(self, url: httpx.URL, prefix: str = "", deadline: float | None = None) -> str:
        """The address to connect to for ``url``, after checking every address its host resolves to."""
        if url.scheme not in ("http", "https"):
            raise _refused(prefix, "only http and https addresses can be researched.", "invalid_url")
        host = url.host
        if not host:
            raise _refused(prefix, "the address has no host name.", "invalid_url")
        remaining = self.policy.timeout if deadline is None else deadline - time.monotonic()
        try:
            addresses = _within(remaining, self._resolve, url.raw_host.decode("ascii"),
                                url.port or (443 if url.scheme == "https" else 80))
        except TimeoutError:
            raise _refused(prefix, f"looking up the host name {host} took longer than {self.policy.timeout:g} "
                                   "seconds.", "timeout") from None
        except (OSError, UnicodeError):
            addresses = []
        if not addresses:
            raise _refused(prefix, f"the host name {host} could not be found.", "unresolvable")
        for address in addresses:
            refusal = address_refusal(address, self.policy.allow_private)
            if refusal:
                where = f"{address} is" if address == host else f"{host} resolves to {address},"
                raise _refused(prefix, f"{where} {refusal}; research reads only public web sites.",
                               "refused_address", capitalize=False)
        return addresses[0]

    def _get(self, url: httpx.URL, address: str, deadline: float) -> Page | httpx.URL:
        """GET ``url`` from ``address``: the page, or the URL it redirects to."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _timed_out(self.policy)
        extensions = {"sni_hostname": url.raw_host.decode("ascii")} if url.scheme == "https" else {}
        request = self._client.build_request("GET", url.copy_with(host=address), timeout=remaining,
                                             headers={"Host": url.netloc.decode("ascii")}, extensions=extensions)
        try:
            response = self._client.send(request, stream=True)
            try:
                return self._read(url, response, deadline)
            finally:
                response.close()
        except httpx.TimeoutException:
            raise _timed_out(self.policy) from None
        except httpx.InvalidURL:
            # httpx builds the redirect's request itself, and a Location that is no http(s) URL
            # (javascript:, data:) cannot be one.
            raise FetchFailed("It redirected to an address that is not a web page (only http and https "
                              "are read).", "invalid_redirect") from None
        except httpx.ConnectError as exc:
            if "CERTIFICATE_VERIFY_FAILED" in str(exc):
                raise FetchFailed(f"The security certificate of {url.host} could not be verified.",
                                  "certificate_invalid") from None
            raise FetchFailed(f"Could not connect to {url.host}.", "connection_failed") from None
        except httpx.HTTPError:
            raise FetchFailed(f"The connection to {url.host} failed while reading the page.",
                              "connection_failed") from None

    def _read(self, url: httpx.URL, response: httpx.Response, deadline: float) -> Page | httpx.URL:
        status = response.status_code
        if status in REDIRECT_STATUSES and response.headers.get("location"):
            return _parse_joined(url, response.headers["location"])
        if status >= 300:
            raise FetchFailed(f"The server answered {status} {response.reason_phrase}.".rstrip(" .") + ".",
                              "http_status")
        content_type = response.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if content_type not in ALLOWED_TYPES:
            shown = content_type or "no content type"
            raise FetchFailed(f"It is {shown}, not a web page or text (HTML, XHTML or plain text).",
                              "unsupported_type")
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.policy.max_bytes:
            raise _too_large(self.policy)
        chunks: list[bytes] = []
        size = 0
        # Decoded bytes are counted, so a compressed body cannot expand past the cap either.
        for chunk in response.iter_bytes():
            size += len(chunk)
            if size > self.policy.max_bytes:
                raise _too_large(self.policy)
            if time.monotonic() > deadline:
                raise _timed_out(self.policy)
            chunks.append(chunk)
        return Page(url=str(url), final_url=str(url), status=status, content_type=content_type,
                    charset=response.charset_encoding, body=b"".join(chunks))


def _parse(url: str, message: str) -> httpx.URL:
    try:
        return httpx.URL(url.strip())
    except (httpx.InvalidURL, TypeError, ValueError):
        raise FetchFailed(message, "invalid_url") from None


def _parse_joined(base: httpx.URL, location: str) -> httpx.URL:
    try:
        return base.join(location.strip())
    except (httpx.InvalidURL, TypeError, ValueError):
        raise FetchFailed("It redirected to an address that is not valid.", "invalid_url") from None


def _refused(prefix: str, clause: str, code: str, capitalize: bool = True) -> FetchFailed:
    """A failure worded after ``prefix`` (a redirect) or as a sentence of its own."""
    if not prefix and capitalize:
        clause = clause[0].upper() + clause[1:]
    return FetchFailed(prefix + clause, code)


def _within(seconds: float, fn: Callable[..., list[str]], *args: Any) -> list[str]:
    """``fn(*args)``, given up on after ``seconds`` (``TimeoutError``): the system resolver has no timeout
    of its own that we control, and a hung DNS server must not hold a research job past its limit."""
    if seconds <= 0:
        raise TimeoutError
    from ..concurrency import under_gevent

    if under_gevent():
        import gevent

        try:
            with gevent.Timeout(seconds):
                return fn(*args)
        except gevent.Timeout:
            raise TimeoutError from None
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="epm-resolve")
    try:
        return pool.submit(fn, *args).result(timeout=seconds)
    except FutureTimeout:
        raise TimeoutError from None
    finally:
        pool.shutdown(wait=False)  # a resolver stuck in the C library ends on its own; nobody waits for it


def _timed_out(policy: FetchPolicy) -> FetchFailed:
    return FetchFailed(f"It did not answer within {policy.timeout:g} seconds.", "timeout")


def _too_large(policy: FetchPolicy) -> FetchFailed:
    return FetchFailed(f"It is larger than the {_size(policy.max_bytes)} research reads per page.", "too_large")


def _size(count: int) -> str:
    if count >= 1024 * 1024:
        return f"{count / (1024 * 1024):.1f}".removesuffix(".0") + " MB"
    if count >= 1024:
        return f"{round(count / 1024):,} KB"
    return f"{count} bytes"
