"""Checking a strategy session's fields: one set of rules for the form and the JSON API."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor, wait
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from ipaddress import ip_address
from typing import Any
from urllib.parse import urlsplit

from flask import current_app

from ..errors import ValidationFailed
from ..operations.fetch import FetchPolicy, address_refusal, resolve_host

FIELDS = ("name", "business", "objectives", "budget", "currency", "deadline", "team_size", "source_urls")
# The currencies the form offers (ISO 4217); the amount is shown with Intl.NumberFormat in the reader's locale.
CURRENCIES = ("USD", "EUR", "GBP", "JPY", "CHF", "CAD", "AUD", "NZD", "CNY", "HKD", "SGD", "INR", "KRW", "SEK",
              "NOK", "DKK", "PLN", "CZK", "HUF", "BRL", "MXN", "ZAR", "AED", "SAR", "ILS", "TRY")
# Looking up the sources' host names on save: all at once, and at most this long in total.
RESOLVE_SECONDS = 3.0
_resolver = ThreadPoolExecutor(max_workers=8, thread_name_prefix="epm-url-check")
MAX_NAME = 200
MAX_BUSINESS = 5000
MAX_ITEMS = 50
MAX_TEAM = 500
MAX_BUDGET = Decimal("999999999999.99")


def lines(text: str | None) -> list[str]:
    """A textarea's non-blank lines, stripped (the form's way of sending a list)."""
    return [line.strip() for line in (text or "").splitlines() if line.strip()]


def from_form(form: Any) -> dict[str, Any]:
    """The raw values of the session form, lists split one per line."""
    return {"name": form.get("name", ""), "business": form.get("business", ""),
            "objectives": lines(form.get("objectives")), "budget": form.get("budget", ""),
            "currency": form.get("currency", ""),
            "deadline": form.get("deadline", ""), "team_size": form.get("team_size", ""),
            "source_urls": lines(form.get("source_urls"))}


def clean_session(data: Any, *, partial: bool = False) -> dict[str, Any]:
    """The checked values of ``data``, converted for the model; ``ValidationFailed`` naming each bad field.

    With ``partial`` only the fields present are checked (a PATCH); otherwise ``name`` is required.
    Empty strings and null clear the optional fields.
    """
    if not isinstance(data, dict):
        raise ValidationFailed("Send a JSON object with the session's fields.", {"body": "must be an object"})
    errors: dict[str, str] = {}
    unknown = sorted(set(data) - set(FIELDS))
    if unknown:
        errors.update({key: "is not a session field" for key in unknown})
    clean: dict[str, Any] = {}
    checks = {"name": _name, "business": _business, "objectives": _objectives, "budget": _budget,
              "currency": _currency, "deadline": _deadline, "team_size": _team_size, "source_urls": _urls}
    for key, check in checks.items():
        if partial and key not in data:
            continue
        try:
            clean[key] = check(data.get(key))
        except ValueError as exc:
            errors[key] = str(exc)
    if errors:
        raise ValidationFailed("Please correct the marked fields.", errors)
    return clean


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _name(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("Give the session a name.")
    if len(value.strip()) > MAX_NAME:
        raise ValueError(f"Use at most {MAX_NAME} characters.")
    return value.strip()


def _business(value: Any) -> str:
    if _blank(value):
        return ""
    if not isinstance(value, str):
        raise ValueError("Describe the business in text.")
    if len(value) > MAX_BUSINESS:
        raise ValueError(f"Use at most {MAX_BUSINESS} characters.")
    return value.strip()


def _string_list(value: Any, what: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValueError(f"Give a list of {what} (one per line on the form).")
    items = [item.strip() for item in value if item.strip()]
    if len(items) > MAX_ITEMS:
        raise ValueError(f"Give at most {MAX_ITEMS} {what}.")
    return items


def _objectives(value: Any) -> list[str]:
    items = _string_list(value, "objectives")
    long = [item for item in items if len(item) > 500]
    if long:
        raise ValueError("Keep each objective under 500 characters.")
    return items


def _urls(value: Any) -> list[str]:
    """The source URLs, each checked now with the research fetcher's own policy; every bad line named."""
    items = _string_list(value, "URLs")
    problems = []
    hosts: dict[str, list[int]] = {}
    for number, item in enumerate(items, start=1):
        parts = urlsplit(item)
        try:
            port = parts.port
        except ValueError:
            port = -1
        if parts.scheme not in ("http", "https") or not parts.hostname or len(item) > 2000:
            problems.append((number, f"{item[:80]!r} is not an http:// or https:// address."))
        elif port == -1 or port == 0:
            problems.append((number, f"{item[:80]!r} has a port that is not a number from 1 to 65535."))
        else:
            hosts.setdefault(parts.hostname, []).append(number)
    for host, reason in _refused_hosts(list(hosts)).items():
        problems += [(number, f"{items[number - 1][:80]!r}: {host} is {reason}; research reads only public web "
                              "sites.") for number in hosts[host]]
    if problems:
        raise ValueError("\n".join(f"Line {number}: {text}" for number, text in sorted(problems)))
    return list(dict.fromkeys(items))


def _refused_hosts(hosts: list[str]) -> dict[str, str]:
    """Why the fetcher would refuse each of ``hosts`` (by ``address_refusal`` on what it resolves to).

    A name that does not resolve now is let through: DNS may be down for a moment, and the fetch
    checks it again (and says so) when the research runs.
    """
    allow_private = FetchPolicy.from_config(current_app.config).allow_private
    refused: dict[str, str] = {}
    lookups = {}
    for host in hosts:
        try:
            addresses = [str(ip_address(host))]
        except ValueError:
            lookups[host] = _resolver.submit(resolve_host, host, 443)
            continue
        refused.update(_refusal(host, addresses, allow_private))
    done, _ = wait(lookups.values(), timeout=RESOLVE_SECONDS)
    for host, future in lookups.items():
        if future in done and future.exception() is None:
            refused.update(_refusal(host, future.result(), allow_private))
    return refused


def _refusal(host: str, addresses: list[str], allow_private: bool) -> dict[str, str]:
    for address in addresses:
        reason = address_refusal(address, allow_private)
        if reason:
            return {host: reason if address == host else f"{reason} ({address})"}
    return {}


def _currency(value: Any) -> str:
    if _blank(value):
        return "USD"
    code = str(value).strip().upper()
    if code not in CURRENCIES:
        raise ValueError(f"Choose a currency from the list ({', '.join(CURRENCIES[:4])}, …).")
    return code


def _budget(value: Any) -> Decimal | None:
    if _blank(value):
        return None
    if isinstance(value, bool):
        raise ValueError("Give the budget as a number, like 250000.")
    try:
        amount = Decimal(str(value).strip().replace(",", ""))
    except InvalidOperation:
        raise ValueError("Give the budget as a number, like 250000.") from None
    if not amount.is_finite() or amount < 0:
        raise ValueError("The budget cannot be negative.")
    if amount > MAX_BUDGET:
        raise ValueError("That budget is too large.")
    return amount.quantize(Decimal("0.01"))


def _deadline(value: Any) -> date | None:
    if _blank(value):
        return None
    try:
        day = date.fromisoformat(str(value).strip())
    except ValueError:
        raise ValueError("Give the deadline as a date like 2027-06-30 (year-month-day).") from None
    today = datetime.now(UTC).date()
    if day < today:
        raise ValueError(f"The deadline {day.isoformat()} has passed: choose a date from today "
                         f"({today.isoformat()}) on.")
    return day


def _team_size(value: Any) -> int | None:
    if _blank(value):
        return None
    if isinstance(value, bool) or isinstance(value, float) and not value.is_integer():
        raise ValueError(f"Give a whole number of people from 1 to {MAX_TEAM}.")
    try:
        size = int(str(value).strip()) if not isinstance(value, (int, float)) else int(value)
    except ValueError:
        raise ValueError(f"Give a whole number of people from 1 to {MAX_TEAM}.") from None
    if not 1 <= size <= MAX_TEAM:
        raise ValueError(f"Give a whole number of people from 1 to {MAX_TEAM}.")
    return size
