"""The published contract, enforced: Schemathesis fuzzes every operation of /api/openapi.json against a
real gunicorn server, signed in with a CSRF token, and every answer must be no 5xx and match the document
(status code, content type, headers, body schema)."""

from __future__ import annotations

import re
import uuid

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import checks

from epm.api_schema import openapi_document

pytestmark = pytest.mark.live

# The user-wide event stream never ends by design (it is the live feed): a fuzzer cannot read it to the end.
ENDLESS = "/api/background-jobs/events"
CHECKS = [checks.not_a_server_error, checks.status_code_conformance, checks.content_type_conformance,
          checks.response_headers_conformance, checks.response_schema_conformance]
COUNTS = {"cases": 0, "server_errors": 0}


@pytest.fixture(scope="module")
def contract_server(start_server):
    yield start_server("contract", EPM_SSE_HEARTBEAT="1")
    print(f"\nSchemathesis: {COUNTS['cases']} cases, {COUNTS['server_errors']} answered 5xx")


@pytest.fixture(scope="module")
def signed_in(contract_server) -> requests.Session:
    """A session signed up through the form, sending the page's CSRF token with every request."""
    http = requests.Session()

    def csrf(path: str) -> str:
        match = re.search(r'name="csrf-token" content="([^"]+)"', http.get(contract_server.url + path).text)
        assert match
        return match.group(1)

    token = csrf("/signup")
    response = http.post(contract_server.url + "/signup", data={"username": f"fuzz{uuid.uuid4().hex[:8]}",
                                                                "password": "password123", "csrf_token": token})
    assert response.status_code == 200, response.text[:300]
    http.headers["X-CSRFToken"] = csrf("/sessions")
    created = http.post(contract_server.url + "/api/sessions", json={"name": "Fuzzed"})
    assert created.status_code == 201
    return http


# The document the server publishes is built by this function (compared with the served one below).
schema = schemathesis.openapi.from_dict(openapi_document()).exclude(path=ENDLESS)


@schema.parametrize()
@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_operation_answers_as_documented_and_never_5xx(case, contract_server, signed_in):
    response = case.call(base_url=contract_server.url, session=signed_in, timeout=15)
    COUNTS["cases"] += 1
    COUNTS["server_errors"] += response.status_code >= 500
    case.validate_response(response, checks=CHECKS)


def test_the_document_describes_every_json_route(contract_server):
    document = requests.get(contract_server.url + "/api/openapi.json", timeout=10).json()
    assert document == openapi_document(), "the fuzzed document is the one the server publishes"
    assert document["openapi"].startswith("3.")
    paths = document["paths"]
    for path in ("/api/background-jobs", "/api/background-jobs/{job_id}/cancel", "/api/sessions/{session_id}",
                 "/api/sessions/{session_id}/{operation}", "/api/operations"):
        assert path in paths
    assert "StartJob" in document["components"]["schemas"]
