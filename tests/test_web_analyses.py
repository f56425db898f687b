"""The research report and canvas pages, filled by real jobs reading pages from a local HTTP server."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from tests.support import pages_handler, serve_http, wait_for

PAGE = b"""<!doctype html><html><head><title>FreshBox meal kits</title>
<meta name="description" content="Weekly recipe boxes for busy families."></head>
<body><h1>Dinner, sorted</h1><h2>How subscriptions work</h2>
<p>Choose recipes every week. Pause or skip any delivery. Our subscription boxes bring fresh ingredients
and recipes to busy families, with delivery across the city and a mobile app for choosing meals.</p></body></html>"""


@pytest.fixture(scope="module")
def pages() -> Iterator[str]:
    with serve_http(pages_handler({"/about": PAGE})) as url:
        yield url


def _run(client, session_id: int, operation: str) -> dict:
    job = client.post(f"/api/sessions/{session_id}/{operation}").get_json()["job"]

    def finished():
        current = client.get(f"/api/background-jobs/{job['id']}").get_json()["job"]
        return current if current["terminal"] else None

    return wait_for(finished, timeout=20, message=f"{operation} to finish")


def test_research_and_canvas_pages_show_the_latest_results(app, auth_client, pages):
    app.config["EPM_RESEARCH_ALLOW_PRIVATE"] = True
    session = auth_client.post("/api/sessions", json={
        "name": "FreshBox", "business": "We run a subscription meal-kit service for busy families.",
        "source_urls": [f"{pages}/about", f"{pages}/missing"]}).get_json()["session"]

    research = _run(auth_client, session["id"], "web_research")
    assert research["status"] == "completed", research
    assert research["result"]["url"] == f"/sessions/{session['id']}/research"
    html = auth_client.get(research["result"]["url"]).get_data(as_text=True)
    assert "FreshBox meal kits" in html and "Our subscription boxes bring fresh ingredients" in html
    assert "How subscriptions work" in html
    assert "1 source read, 1 failed" in html
    assert re.search(rf"Could not read {re.escape(pages)}/missing</h3>\s*<p class=\"job-failed\">[^<]*404", html)
    assert "Key facts" in html and "<h2 id=\"overview-h\">Summary</h2>" in html
    assert f'href="/sessions/{session["id"]}/research.md"' in html

    exported = auth_client.get(f"/sessions/{session['id']}/research.md")
    assert exported.status_code == 200 and exported.mimetype == "text/markdown"
    assert exported.headers["Content-Disposition"] == 'attachment; filename="freshbox-research.md"'
    markdown = exported.get_data(as_text=True)
    assert markdown.startswith("# Research: FreshBox") and "FreshBox meal kits" in markdown
    assert f"Could not read {pages}/missing" in markdown

    canvas = _run(auth_client, session["id"], "bmc_analysis")
    assert canvas["status"] == "completed", canvas
    html = auth_client.get(f"/sessions/{session['id']}/canvas").get_data(as_text=True)
    assert "using the research report" in html
    titles = re.findall(r'<h2 id="bmc-[a-z_]+">([^<]+)</h2>', html)
    assert titles == ["Key partners", "Key activities", "Key resources", "Value propositions",
                      "Customer relationships", "Channels", "Customer segments", "Cost structure",
                      "Revenue streams"]

    # Every statement keeps its reason behind a disclosure, not as grey text beside it.
    statements = re.findall(r'<details class="why"><summary>([^<]+)</summary><p class="why-text">([^<]+)', html)
    assert statements and all(text.endswith(".") and reason for text, reason in statements)
    assert 'class="muted basis"' not in html
    assert 'media="print"' in html and "css/print.css" in html

    page = auth_client.get(f"/sessions/{session['id']}").get_data(as_text=True)
    assert "View research report" in page and "View canvas" in page
    assert page.count("Not generated yet.") == 1  # only the program


def test_research_export_without_a_report_is_a_readable_404(auth_client):
    session = auth_client.post("/api/sessions", json={"name": "Empty"}).get_json()["session"]
    response = auth_client.get(f"/sessions/{session['id']}/research.md")
    assert response.status_code == 404
    assert "no research report yet" in response.get_data(as_text=True)
