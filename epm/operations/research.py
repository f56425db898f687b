"""``web_research``: reads the session's source URLs and reports what each page says.

For every source the report holds its title, meta description, headings (h1-h3), an extractive
summary and the key facts it states (sentences with prices, percentages, dates, figures, places:
see ``facts.py``), its word count and key terms, or the reason it could not be read. Across sources
it gives an overall summary and the facts deduplicated, each with its source's link. A source that
fails does not fail the job unless every source does. The fetching itself is in ``fetch.py``.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any
from urllib.parse import urlsplit

from bs4 import BeautifulSoup

from ..jobs import JobContext, OperationError, operation
from ..models import Analysis
from . import facts, text
from .fetch import FetchFailed, FetchPolicy, Page, PageFetcher
from .inputs import SessionBrief, load_inputs, save_row, saved_earlier

MAX_SOURCES = 25
MAX_HEADINGS = 40
PAGE_TERMS = 10
REPORT_TERMS = 15
REPORT_FACTS = 15
REPORT_SUMMARY = 4
# The blocks of prose a page's sentences are read from; navigation and footers are left out.
_PROSE = ["p", "li", "blockquote", "dd", "td", "figcaption"]
_SPACE = re.compile(r"\s+")


def extract_page(body: bytes, content_type: str, charset: str | None = None) -> dict[str, Any]:
    """Title, meta description, headings, word count and key terms of a page's body."""
    if content_type == "text/plain":
        content = body.decode(charset or "utf-8", errors="replace")
        first_line = next((line.strip() for line in content.splitlines() if line.strip()), "")
        paragraphs = [block for block in content.split("\n\n") if block.strip()]
        return _summary(title=_clip(first_line, 200), description="", headings=[], content=content,
                        paragraphs=paragraphs[1:] if len(paragraphs) > 1 else paragraphs)
    soup = BeautifulSoup(body, "html.parser", from_encoding=charset)
    for hidden in soup(["script", "style", "noscript", "template", "svg", "nav", "footer"]):
        hidden.decompose()
    title = _clean(soup.title.get_text()) if soup.title else ""
    headings = [{"level": int(tag.name[1]), "text": _clip(_clean(tag.get_text(" ")), 200)}
                for tag in soup.find_all(["h1", "h2", "h3"])]
    headings = [heading for heading in headings if heading["text"]][:MAX_HEADINGS]
    if not title and headings:
        title = headings[0]["text"]
    body_tag = soup.body or soup
    paragraphs = [_clean(tag.get_text(" ")) for tag in body_tag.find_all(_PROSE)
                  if not tag.find_parent(_PROSE)]
    return _summary(title=_clip(title, 200), description=_clip(_description(soup), 500), headings=headings,
                    content=body_tag.get_text(" "), paragraphs=[p for p in paragraphs if p])


def _description(soup: BeautifulSoup) -> str:
    for tag in soup.find_all("meta"):
        name = (tag.get("name") or tag.get("property") or "").strip().lower()
        if name in ("description", "og:description") and tag.get("content"):
            return _clean(tag["content"])
    return ""


def _summary(*, title: str, description: str, headings: list[dict[str, Any]], content: str,
             paragraphs: list[str]) -> dict[str, Any]:
    tokens = text.words(content)
    if not paragraphs:
        paragraphs = [_clean(content)]
    return {"title": title, "description": description, "headings": headings, "word_count": len(tokens),
            "key_terms": text.top_terms(text.term_counts(tokens), PAGE_TERMS),
            "summary": facts.summarise(paragraphs), "facts": facts.page_facts(paragraphs),
            "paragraphs": paragraphs}


def _clean(value: str) -> str:
    return _SPACE.sub(" ", value).strip()


def _clip(value: str, limit: int) -> str:
    return value if len(value) <= limit else value[:limit - 1].rstrip() + "…"


def read_source(page: Page) -> dict[str, Any]:
    """A report entry for a fetched page."""
    entry = {"url": page.url, "ok": True, "final_url": page.final_url, "status": page.status,
             "content_type": page.content_type, "redirects": list(page.redirects)}
    entry.update(extract_page(page.body, page.content_type, page.charset))
    link = page.final_url or page.url
    entry["facts"] = [{**fact, "url": link, "source": entry["title"] or link} for fact in entry["facts"]]
    return entry


def failed_source(url: str, failure: FetchFailed) -> dict[str, Any]:
    """A report entry for a source that could not be read."""
    return {"url": url, "ok": False, "error": failure.reason, "error_code": failure.code}


def build_report(brief: SessionBrief, sources: list[dict[str, Any]]) -> dict[str, Any]:
    """The research report: every source's entry, and the key terms across the pages read."""
    read = [source for source in sources if source["ok"]]
    counts: Counter[str] = Counter()
    pages: Counter[str] = Counter()
    for source in read:
        for term in source["key_terms"]:
            counts[term["term"]] += term["count"]
            pages[term["term"]] += 1
    ranked = sorted(counts, key=lambda term: (-pages[term], -counts[term], term))[:REPORT_TERMS]
    key_terms = [{"term": term, "count": counts[term], "pages": pages[term]} for term in ranked]
    overall = _overall_summary(read, counts)
    found = _overall_facts(read)
    summary = f"Read {len(read)} of {len(sources)} sources: {len(found)} key fact{'' if len(found) == 1 else 's'}."
    if overall:
        summary += f" {overall[0]}"
    # The paragraphs were only needed to summarise across pages; the report keeps what it shows.
    sources = [{key: value for key, value in source.items() if key != "paragraphs"} for source in sources]
    return {"session": {"id": brief.id, "name": brief.name}, "sources": sources, "read": len(read),
            "failed": len(sources) - len(read), "word_count": sum(source["word_count"] for source in read),
            "key_terms": key_terms, "overview": overall, "facts": found, "summary": summary}


def _overall_summary(read: list[dict[str, Any]], counts: Counter[str]) -> list[str]:
    """The sentences that best carry the key terms of all pages, at most two from one page."""
    picked: list[str] = []
    for source in read:
        picked += facts.summarise(source.get("paragraphs") or source.get("summary", []), 2, counts)
    return facts.summarise(picked, REPORT_SUMMARY, counts) if picked else []


def _overall_facts(read: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every page's facts, deduplicated across pages, taken in turn from each page (the most specific first)."""
    rounds = max((len(source.get("facts", [])) for source in read), default=0)
    interleaved = [source["facts"][index] for index in range(rounds) for source in read
                   if index < len(source.get("facts", []))]
    return facts.deduplicate(interleaved)[:REPORT_FACTS]


def _host(url: str) -> str:
    return urlsplit(url).hostname or url[:60]


@operation("web_research", title="Web research", ready="Research report ready", view_label="View research report",
           resumable=True, start_label="Run web research", needs=("source_urls",),
           steps=("Reading the session", "Summarising the sources and their key facts", "Saving the research report"))
def research_sources(ctx: JobContext) -> dict[str, Any]:
    """Reads the session's source web pages and reports their titles, headings and key terms."""
    ctx.stage(0, "Reading the session")
    inputs = load_inputs(ctx)
    brief = inputs.brief
    urls = list(dict.fromkeys(brief.source_urls))
    if not urls:
        raise OperationError("This session has no source URLs to research.", code="no_sources")
    skipped = urls[MAX_SOURCES:]
    urls = urls[:MAX_SOURCES]
    sources: list[dict[str, Any]] = []
    with PageFetcher(FetchPolicy.from_config(ctx.config)) as fetcher:
        for number, url in enumerate(urls, start=1):
            ctx.progress(5 + 80 * (number - 1) // len(urls), f"Fetching {_host(url)} ({number} of {len(urls)})")
            ctx.check_cancelled()
            try:
                page = fetcher.fetch(url)
            except FetchFailed as failure:
                sources.append(failed_source(url, failure))
                continue
            ctx.progress(5 + (80 * number - 40) // len(urls), f"Reading {_host(url)} ({number} of {len(urls)})")
            sources.append(ctx.run_blocking(read_source, page))
    sources += [failed_source(url, FetchFailed(f"Not fetched: research reads at most {MAX_SOURCES} sources "
                                               "at a time.", "too_many_sources")) for url in skipped]
    if not any(source["ok"] for source in sources):
        reasons = "; ".join(f"{_host(source['url'])}: {source['error']}" for source in sources[:3])
        raise OperationError(f"None of the {len(urls)} sources could be read ({reasons}).", code="no_source_read")
    ctx.stage(88, "Summarising the sources and their key facts")
    report = ctx.run_blocking(build_report, brief, sources)
    ctx.stage(95, "Saving the research report")
    earlier = saved_earlier(ctx, Analysis)  # a resumed job whose earlier attempt saved it already
    analysis_id = earlier.id if earlier is not None else save_row(
        Analysis(user_id=inputs.user_id, session_id=brief.id, job_id=ctx.job_id, kind="research", data=report))
    return {"url": f"/sessions/{brief.id}/research", "summary": report["summary"], "analysis_id": analysis_id,
            "session_id": brief.id}
