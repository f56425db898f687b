"""``bmc_analysis``: a business model canvas built from the session's own words and its latest research.

The nine blocks are filled from what the session says: customer segments from who the business is
"for", themes from the words it uses ("subscription" gives recurring revenue and a subscription
relationship; "delivery" gives logistics partners and fulfilment costs), the objectives as key
activities, the team and budget as resources and costs, and the key terms of the research. Every
item carries its ``basis``: the words of the input it comes from.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, NamedTuple

from ..extensions import db
from ..jobs.registry import operation
from ..jobs.runner import JobContext
from ..models import Analysis
from . import text
from .canvas_themes import AUDIENCES, THEMES
from .inputs import SessionBrief, latest_analysis, load_session
from .text import short_name

BLOCKS = (("key_partners", "Key partners"), ("key_activities", "Key activities"), ("key_resources", "Key resources"),
          ("value_propositions", "Value propositions"), ("customer_relationships", "Customer relationships"),
          ("channels", "Channels"), ("customer_segments", "Customer segments"), ("cost_structure", "Cost structure"),
          ("revenue_streams", "Revenue streams"))
MAX_ITEMS = 6

_FOR = re.compile(r"\b(?P<verb>for|serving|targeting|aimed at|helping|help)\s+(?P<who>(?:[\w'’-]+\s*){1,8})",
                  re.IGNORECASE)
_SEGMENT_END = re.compile(r"\s+(?:and want|and wants|who|that|which|by|with|to|so|while|because|in order)\b.*$",
                          re.IGNORECASE)
_COMMERCIAL = re.compile(r"\b(?:revenue|sales|profit|margin|subscribers|customers|clients|orders|bookings)\b",
                         re.IGNORECASE)


class ThemeHit(NamedTuple):
    """A theme found in the input: its items, the word that matched, and where it was found."""

    items: dict[str, str]
    word: str
    where: str


@dataclass(frozen=True)
class Signals:
    """What the canvas is built from: the offering, segments, matched themes and key terms."""

    brief: SessionBrief
    offering: str
    segments: tuple[tuple[str, str], ...]
    themes: tuple[ThemeHit, ...]
    own_terms: tuple[str, ...]
    research_terms: tuple[str, ...]
    research_sources: int


def read_signals(brief: SessionBrief, research: dict[str, Any] | None = None) -> Signals:
    """Read the session's text (and research key terms): offering, segments, themes, terms."""
    own_words = {"the business description": text.words(brief.business),
                 "the objectives": text.words(" ".join(brief.objectives))}
    research_terms = tuple(term["term"] for term in (research or {}).get("key_terms", []))
    own_words["the research key terms"] = list(research_terms[:10])
    themes = []
    for theme in THEMES:
        for where, tokens in own_words.items():
            hit = next((token for token in tokens if token in theme.keywords), None)
            if hit:
                themes.append(ThemeHit(theme.items, hit, where))
                break
    own_terms = tuple(term["term"] for term in text.key_terms(f"{brief.business} {' '.join(brief.objectives)}", 8))
    return Signals(brief=brief, offering=brief.offering, segments=tuple(_segments(brief, research_terms)),
                   themes=tuple(themes), own_terms=own_terms, research_terms=research_terms,
                   research_sources=int((research or {}).get("read", 0)))


def _segments(brief: SessionBrief, research_terms: tuple[str, ...]) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    for match in _FOR.finditer(brief.business):
        phrase = _SEGMENT_END.sub("", match.group("who")).strip(" ,.;:")
        if phrase and text.is_term(text.words(phrase)[-1]):
            found.append((phrase[0].upper() + phrase[1:],
                          f"\u201c{match.group('verb')} {phrase}\u201d in the business description"))
    # Objectives name staff as often as customers ("hire 5 drivers"): only commercial ones count.
    commercial = " ".join(objective for objective in brief.objectives if _is_commercial(objective))
    for word in dict.fromkeys(text.words(f"{brief.business} {commercial}")):
        if word in AUDIENCES and not any(word in text.words(phrase) for phrase, _ in found):
            found.append((AUDIENCES[word], f"\u201c{word}\u201d in the session"))
    for term in research_terms[:10]:
        audience = AUDIENCES.get(term) or AUDIENCES.get(f"{term}s")
        if audience:
            found.append((audience, f"\u201c{term}\u201d is a key term of the research"))
    return found


def _segment(signals: Signals) -> str:
    """The first customer segment, to use inside a sentence."""
    segment = signals.segments[0][0] if signals.segments else "its customers"
    return segment if segment[1:2].isupper() else segment[0].lower() + segment[1:]


def _item(value: str, basis: str) -> dict[str, str]:
    return {"text": value[0].upper() + value[1:], "basis": basis}


def _fill(signals: Signals, block: str) -> list[dict[str, str]]:
    """The theme items of ``block``, each with the word that triggered it."""
    segment = _segment(signals)
    items = []
    for hit in signals.themes:
        if block in hit.items:
            value = hit.items[block].format(offering=signals.offering, segment=segment, word=hit.word)
            items.append(_item(value, f"\u201c{hit.word}\u201d in {hit.where}"))
    return items


def _money(amount: Decimal) -> str:
    return f"{amount:,.0f}" if amount == amount.to_integral_value() else f"{amount:,.2f}"


def customer_blocks(signals: Signals) -> dict[str, list[dict[str, str]]]:
    """Customer segments and value propositions."""
    segments = [_item(value, basis) for value, basis in signals.segments]
    if not segments:
        segments = [_item(f"Early adopters who need {signals.offering}", "no customer group is named in the session")]
    values = _fill(signals, "value_propositions")
    values.insert(0, _item(f"{signals.offering} for {_segment(signals)}",
                           "what the business description says it offers, and to whom"))
    if signals.research_terms:
        values.append(_item(f"Speak to what the market discusses: {', '.join(signals.research_terms[:3])}",
                            f"key terms of {signals.research_sources} researched sources"))
    return {"customer_segments": segments, "value_propositions": values}


def reach_blocks(signals: Signals) -> dict[str, list[dict[str, str]]]:
    """Channels and customer relationships."""
    channels = _fill(signals, "channels") or [_item("Direct sales and word of mouth", "no channel is named in the "
                                                    "session")]
    relationships = _fill(signals, "customer_relationships")
    team = signals.brief.team_size
    if team is not None and team <= 5:
        relationships.append(_item("Personal, founder-led contact with early customers", f"a team of {team}"))
    elif team is not None:
        relationships.append(_item("A customer service team with a shared support inbox", f"a team of {team}"))
    if not relationships:
        relationships.append(_item("Self-service with personal help on request", "no relationship is named"))
    return {"channels": channels, "customer_relationships": relationships}


def infrastructure_blocks(signals: Signals) -> dict[str, list[dict[str, str]]]:
    """Key activities, key resources and key partners."""
    brief = signals.brief
    activities = [_item(short_name(objective, 90), "an objective of the session") for objective in brief.objectives[:4]]
    activities += _fill(signals, "key_activities")
    resources = _fill(signals, "key_resources")
    if brief.team_size:
        resources.insert(0, _item(f"A team of {brief.team_size} people", "the session's team size"))
    if brief.budget is not None:
        resources.insert(1 if brief.team_size else 0,
                         _item(f"A programme budget of {_money(brief.budget)}", "the session's budget"))
    resources.append(_item(f"Know-how and reputation of the {signals.offering}",
                           "what the business description says it offers"))
    partners = _fill(signals, "key_partners") or [
        _item(f"Suppliers of what the {signals.offering} is made from", "no partner is named in the session")]
    if not activities:
        activities = [_item(f"Producing and delivering the {signals.offering}", "the business description")]
    return {"key_activities": activities, "key_resources": resources, "key_partners": partners}


def finance_blocks(signals: Signals) -> dict[str, list[dict[str, str]]]:
    """Cost structure and revenue streams."""
    brief = signals.brief
    costs = []
    if brief.team_size:
        costs.append(_item(f"Salaries of the {brief.team_size}-person team", "the session's team size"))
    if brief.budget is not None:
        until = f" until {brief.deadline.isoformat()}" if brief.deadline else ""
        costs.append(_item(f"Programme investment of {_money(brief.budget)}{until}", "the session's budget"))
    costs += _fill(signals, "cost_structure")
    if not costs:
        costs.append(_item(f"Operating costs of producing the {signals.offering}", "the business description"))
    revenue = _fill(signals, "revenue_streams")
    revenue += [_item(f"Target: {short_name(objective, 90)}", "an objective with a commercial target")
                for objective in brief.objectives if _is_commercial(objective) and any(c.isdigit() for c in objective)]
    if not revenue:
        revenue.append(_item(f"Sales of the {signals.offering}", "the business description"))
    return {"cost_structure": costs, "revenue_streams": revenue}


def _is_commercial(objective: str) -> bool:
    return bool(_COMMERCIAL.search(objective))


CANVAS_STAGES: tuple[tuple[int, str, Callable[[Signals], dict[str, list[dict[str, str]]]]], ...] = (
    (30, "Finding customer segments and value propositions", customer_blocks),
    (50, "Mapping channels and customer relationships", reach_blocks),
    (65, "Identifying key activities, resources and partners", infrastructure_blocks),
    (80, "Working out the cost structure and revenue streams", finance_blocks),
)


def assemble_canvas(signals: Signals, filled: dict[str, list[dict[str, str]]]) -> dict[str, Any]:
    """The canvas data: the nine blocks in the canonical order, each item once, at most ``MAX_ITEMS``."""
    blocks = []
    for key, title in BLOCKS:
        unique: dict[str, dict[str, str]] = {}
        for item in filled.get(key, []):
            unique.setdefault(item["text"].lower(), item)
        blocks.append({"key": key, "title": title, "items": list(unique.values())[:MAX_ITEMS]})
    brief = signals.brief
    segment = blocks[6]["items"][0]["text"]
    return {"session": {"id": brief.id, "name": brief.name}, "offering": signals.offering, "blocks": blocks,
            "key_terms": list(signals.own_terms), "research_terms": list(signals.research_terms[:10]),
            "research_used": bool(signals.research_terms),
            "summary": f"Canvas for {signals.offering}: {sum(len(b['items']) for b in blocks)} items across nine "
                       f"blocks, led by the segment \u201c{segment}\u201d."}


def build_canvas(brief: SessionBrief, research: dict[str, Any] | None = None) -> dict[str, Any]:
    """The business model canvas of ``brief`` (and its research), deterministically."""
    signals = read_signals(brief, research)
    filled: dict[str, list[dict[str, str]]] = {}
    for _, _, build in CANVAS_STAGES:
        filled.update(build(signals))
    return assemble_canvas(signals, filled)


@operation("bmc_analysis", title="Business model canvas", ready="Business model canvas ready",
           view_label="View canvas",
           steps=("Reading the session", "Reading the business description, objectives and research",
                  "Finding customer segments and value propositions", "Mapping channels and customer relationships",
                  "Identifying key activities, resources and partners",
                  "Working out the cost structure and revenue streams", "Saving the canvas"))
def analyse_business_model(ctx: JobContext) -> dict[str, Any]:
    """Builds the nine blocks of a business model canvas from the session and its latest research."""
    ctx.stage(0, "Reading the session")
    session = load_session(ctx)
    brief = SessionBrief.from_session(session)
    research = latest_analysis(session, "research")
    ctx.stage(10, "Reading the business description, objectives and research")
    signals = ctx.run_blocking(read_signals, brief, research.data if research else None)
    filled: dict[str, list[dict[str, str]]] = {}
    for percent, message, build in CANVAS_STAGES:
        ctx.stage(percent, message)
        filled.update(ctx.run_blocking(build, signals))
    ctx.stage(92, "Saving the canvas")
    data = assemble_canvas(signals, filled)
    data["research_analysis_id"] = research.id if research else None
    analysis = Analysis(user_id=session.user_id, session_id=session.id, job_id=ctx.job_id, kind="bmc", data=data)
    db.session.add(analysis)
    db.session.commit()
    return {"url": f"/sessions/{session.id}/canvas", "summary": data["summary"], "analysis_id": analysis.id,
            "session_id": session.id}
