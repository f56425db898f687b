"""``bmc_analysis``: a business model canvas written from the session's own words and its latest research.

Every item is a sentence with a subject and a verb, built from what the session says: the business's
name and what it is ("Northside Roasters is a specialty coffee chain"), every customer group its
description names (the guests of its cafés *and* its wholesale restaurant customers), themes from
the words it uses ("subscription" gives a recurring fee), what each objective asks the business to
do, the team and budget, and the key facts of the research (a price for the revenue streams, a
channel's share of sales). Each item keeps its ``basis`` (why it is there, shown on demand) and,
for a fact, its ``source`` link.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, NamedTuple

from ..jobs import JobContext, operation
from ..models import Analysis
from . import text
from .canvas_themes import AUDIENCES, OUTLETS, THEMES
from .inputs import SessionBrief, load_inputs, save_row, saved_earlier
from .workstreams import classify

BLOCKS = (("key_partners", "Key partners"), ("key_activities", "Key activities"), ("key_resources", "Key resources"),
          ("value_propositions", "Value propositions"), ("customer_relationships", "Customer relationships"),
          ("channels", "Channels"), ("customer_segments", "Customer segments"), ("cost_structure", "Cost structure"),
          ("revenue_streams", "Revenue streams"))
MAX_ITEMS = 6
FACTS_PER_BLOCK = 2

_FOR = re.compile(r"\b(?P<verb>for|serving|targeting|aimed at|helping|help)\s+(?P<who>(?:[\w'’-]+\s*){1,8})",
                  re.IGNORECASE)
_SEGMENT_END = re.compile(r"\s+(?:and want|and wants|who|that|which|by|with|to|so|while|because|in order|"
                          r"delivering|offering|selling)\b.*$", re.IGNORECASE)
_COMMERCIAL = re.compile(r"\b(?:revenue|sales|profit|margin|subscribers|customers|clients|orders|bookings)\b",
                         re.IGNORECASE)
_NUMBER = r"\d[\d,]*|two|three|four|five|six|seven|eight|nine|ten|twelve|twenty|fifty|hundreds|dozens"
# "60 wholesale restaurant customers": a count, up to three describing words, then the buyers.
_BUYERS = re.compile(rf"\b(?:(?P<count>{_NUMBER})\s+)?(?P<kind>(?:[^\W\d_][\w'’-]*\s+){{0,3}})"
                     r"(?P<who>customers|clients|accounts|buyers)\b", re.IGNORECASE)
# "14 cafés": a count of the business's own outlets, where it serves people in person.
_OUTLETS = re.compile(rf"\b(?P<count>{_NUMBER})\s+(?:own\s+|new\s+)?(?P<outlet>[^\W\d_][\w'’-]*)\b"
                      r"(?!\s+(?:customers|clients|accounts|buyers))", re.IGNORECASE)
_ORGANISATION = {"chain", "company", "business", "firm", "brand", "group", "startup", "start-up", "network"}
_OBJECTIVE_VERB = re.compile(r"^(?P<verb>[A-Za-z]+)\s+(?P<object>.+?)(?:\s+by\s+(?:Q[1-4]\s+)?\d{4}.*|\s+by\s+"
                             r"(?:the\s+)?end\s+of.*)?$")
_FACT_WORDS = {
    "customer_segments": "guest guests customer customers restaurants restaurant commuters students families "
                         "members visitors clients shoppers buyers residents",
    "channels": "mobile app online order-ahead delivery website channel drive-thru social counter",
    "revenue_streams": "ticket price prices pay pays spend revenue sales worth per pound contract contracts",
    "cost_structure": "rent rents cost costs lease wage wages rose expensive fit-out",
}

# The kind of fact each block prefers: a price says most about revenue, a share about a channel.
_FACT_KINDS = {"customer_segments": "percentage", "channels": "percentage", "revenue_streams": "price",
               "cost_structure": "price"}


class Segment(NamedTuple):
    """A customer group: how to name it inside a sentence, the sentence that describes it, and why."""

    label: str
    sentence: str
    basis: str


class ThemeHit(NamedTuple):
    """A theme found in the input: its items, the word that matched, and where it was found."""

    items: dict[str, str]
    word: str
    where: str


@dataclass(frozen=True)
class Signals:
    """What the canvas is built from: who the business is, its segments, themes, terms and research facts."""

    brief: SessionBrief
    offering: str
    subject: str
    segments: tuple[Segment, ...]
    themes: tuple[ThemeHit, ...]
    own_terms: tuple[str, ...]
    research_terms: tuple[str, ...]
    facts: tuple[dict[str, Any], ...]
    research_sources: int

    @property
    def the_offering(self) -> str:
        """The offering inside a sentence: "the specialty coffee chain", or the session's name alone."""
        return f"the {self.offering}" if self.brief.business else self.offering

    @property
    def thing(self) -> str:
        """What the business sells, for "offers ___": "specialty coffee", else "a subscription meal-kit service"."""
        words = self.offering.split()
        if len(words) > 1 and words[-1].lower() in _ORGANISATION:
            return " ".join(words[:-1])
        return f"{_article(self.offering)} {self.offering}" if self.brief.business else self.offering


def read_signals(brief: SessionBrief, research: dict[str, Any] | None = None) -> Signals:
    """Read the session's text and research: who the business is, its segments, themes and facts."""
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
    subject = brief.company or "The business"
    offering = brief.offering
    provisional = Signals(brief, offering, subject, (), (), own_terms, research_terms, (), 0)
    return Signals(brief=brief, offering=offering, subject=subject,
                   segments=tuple(_segments(provisional, research_terms)), themes=tuple(themes),
                   own_terms=own_terms, research_terms=research_terms,
                   facts=tuple((research or {}).get("facts", [])),
                   research_sources=int((research or {}).get("read", 0)))


def _segments(signals: Signals, research_terms: tuple[str, ...]) -> list[Segment]:
    """Every customer group the session names: "for X", outlets' guests, buyers, audience words, research."""
    brief = signals.brief
    provider = brief.company or signals.the_offering
    found: list[Segment] = []
    for match in _FOR.finditer(brief.business):
        phrase = _SEGMENT_END.sub("", match.group("who")).strip(" ,.;:")
        if phrase and text.is_term(text.words(phrase)[-1]):
            label = phrase if phrase[1:2].isupper() else phrase[0].lower() + phrase[1:]
            found.append(Segment(label, f"{_capital(label)} are customers of {provider}.",
                                 f"The business description says it is \u201c{match.group('verb')} {phrase}\u201d."))
    for match in _OUTLETS.finditer(brief.business):
        outlet = _singular(match.group("outlet").lower())
        people = OUTLETS.get(outlet)
        if people and not _covers(found, people):
            plural = match.group(0).split()[-1]
            found.append(Segment(f"{outlet} {people}",
                                 f"{_capital(people)} visit the {match.group('count')} {plural} to buy "
                                 f"{signals.thing} in person.",
                                 f"The business description names \u201c{match.group(0)}\u201d, where it serves "
                                 "people in person."))
    for match in _BUYERS.finditer(brief.business):
        kind = " ".join(word for word in match.group("kind").split() if text.is_term(word.lower()))
        label = f"{kind} {match.group('who')}".strip().lower()
        if kind and not _covers(found, label):
            count = f"{match.group('count')} " if match.group("count") else ""
            found.append(Segment(label, f"The {count}{label} buy {signals.thing} from {provider}.",
                                 f"The business description names \u201c{match.group(0).strip()}\u201d."))
    commercial = " ".join(objective for objective in brief.objectives if _is_commercial(objective))
    for word in dict.fromkeys(text.words(f"{brief.business} {commercial}")):
        if word in AUDIENCES and not _covers(found, word):
            audience = AUDIENCES[word]
            found.append(Segment(audience.lower(), f"{audience} are customers of {provider}.",
                                 f"The session names \u201c{word}\u201d."))
    for term in research_terms[:10]:
        audience = AUDIENCES.get(term) or AUDIENCES.get(f"{term}s")
        if audience and not _covers(found, audience.lower()):
            found.append(Segment(audience.lower(), f"The research names {audience.lower()} as buyers in this market.",
                                 f"\u201c{term}\u201d is a key term of the researched pages."))
    return found


def _singular(noun: str) -> str:
    """The singular of a plural outlet noun: bakeries -> bakery, branches -> branch, cafés -> café."""
    if noun.endswith("ies"):
        return noun[:-3] + "y"
    if noun.endswith(("ches", "shes", "sses")):
        return noun[:-2]
    return noun[:-1] if noun.endswith("s") and not noun.endswith("ss") else noun


def _covers(found: list[Segment], words: str) -> bool:
    """Whether a segment already found names any of ``words`` (singular or plural)."""
    wanted = {word.rstrip("s") for word in text.words(words)}
    return any(wanted & {word.rstrip("s") for word in text.words(segment.label)} for segment in found)


def _capital(value: str) -> str:
    return value[:1].upper() + value[1:]


def _article(noun_phrase: str) -> str:
    return "an" if noun_phrase[:1].lower() in "aeiou" else "a"


def _segment(signals: Signals) -> str:
    """The first customer segment, to use inside a sentence."""
    return signals.segments[0].label if signals.segments else "its customers"


def _item(value: str, basis: str, source: dict[str, str] | None = None) -> dict[str, Any]:
    item: dict[str, Any] = {"text": _capital(value), "basis": basis}
    if source:
        item["source"] = source
    return item


def _fill(signals: Signals, block: str) -> list[dict[str, Any]]:
    """The theme sentences of ``block``, each with the word that triggered it."""
    segment = _segment(signals)
    items = []
    for hit in signals.themes:
        if block in hit.items:
            value = hit.items[block].format(offering=signals.offering, segment=segment, subject=signals.subject)
            items.append(_item(value, f"The word \u201c{hit.word}\u201d in {hit.where}."))
    return items


def _facts_for(signals: Signals, block: str) -> list[dict[str, Any]]:
    """The research facts that speak to ``block`` (by their words), each citing its source."""
    wanted = set(_FACT_WORDS[block].split())
    preferred = _FACT_KINDS[block]
    ranked = []
    for position, fact in enumerate(signals.facts):
        shared = len(wanted & set(text.words(fact["text"])))
        if shared:
            ranked.append((-(shared + 2 * (preferred in fact.get("kinds", []))), position, fact))
    chosen = [fact for _, _, fact in sorted(ranked, key=lambda item: item[:2])][:FACTS_PER_BLOCK]
    return [_item(fact["text"], f"A key fact of the research, from \u201c{fact.get('source') or fact['url']}\u201d.",
                  {"url": fact["url"], "title": fact.get("source") or fact["url"]}) for fact in chosen]


def _money(amount: Decimal) -> str:
    return f"{amount:,.0f}" if amount == amount.to_integral_value() else f"{amount:,.2f}"


def customer_blocks(signals: Signals) -> dict[str, list[dict[str, Any]]]:
    """Customer segments and value propositions."""
    segments = [_item(segment.sentence, segment.basis) for segment in signals.segments]
    if not segments:
        segments = [_item(f"Early adopters who need {signals.thing} are the first customers.",
                          "No customer group is named in the session.")]
    segments += _facts_for(signals, "customer_segments")
    labels = [segment.label for segment in signals.segments[:2]] or ["its first customers"]
    values = [_item(f"{signals.subject} offers {signals.thing} to {' and '.join(labels)}.",
                    "What the business description says it offers, and to whom.")]
    values += _fill(signals, "value_propositions")
    return {"customer_segments": segments, "value_propositions": values}


def reach_blocks(signals: Signals) -> dict[str, list[dict[str, Any]]]:
    """Channels and customer relationships."""
    channels = _fill(signals, "channels") or [_item("Direct sales and word of mouth bring in customers.",
                                                    "No channel is named in the session.")]
    channels += _facts_for(signals, "channels")
    relationships = _fill(signals, "customer_relationships")
    team = signals.brief.team_size
    if team is not None and team <= 5:
        relationships.append(_item("The founders keep personal contact with early customers.",
                                   f"The team has {team} people."))
    elif team is not None:
        relationships.append(_item("A customer service team answers requests from a shared inbox.",
                                   f"The team has {team} people."))
    if not relationships:
        relationships.append(_item("Customers serve themselves and get personal help on request.",
                                   "No way of looking after customers is named in the session."))
    return {"channels": channels, "customer_relationships": relationships}


def objective_activity(subject: str, objective: str) -> str:
    """What an objective asks the business to do, as a sentence ("Northside Roasters selects sites ...")."""
    kind = classify(objective).key
    match = _OBJECTIVE_VERB.match(objective.rstrip(". "))
    verb = match.group("verb").lower() if match else ""
    # Objectives usually open with a verb ("Open 10 cafés"); anything else ("20% more revenue", "Increased
    # margins") is quoted rather than bent into a sentence.
    third_person = verb.endswith("s") and not verb.endswith(("ss", "us"))
    if not match or verb in ("the", "a", "an", "our") or verb.endswith(("ed", "ing")) or third_person:
        return f"{subject} works toward the objective \u201c{objective.rstrip('. ')}\u201d."
    thing = match.group("object")
    the_thing = re.sub(r"^(?:an?|our)\s+", "the ", thing, flags=re.IGNORECASE)
    lowered = objective.rstrip(". ")
    lowered = lowered if lowered[1:2].isupper() else lowered[0].lower() + lowered[1:]
    patterns = {
        "launch": f"{subject} selects sites, fits them out and opens {thing}.",
        "digital": f"{subject} designs, builds and runs {the_thing}.",
        "people": f"{subject} recruits, onboards and trains {thing}.",
        "efficiency": f"{subject} measures and redesigns its processes to {lowered}.",
        "commercial": f"{subject} wins and serves customers to {lowered}.",
        "compliance": f"{subject} prepares controls and audits to {lowered}.",
    }
    if kind == "launch" and thing.lower().startswith(("in ", "into ", "to ")):
        return f"{subject} selects sites, fits them out and opens {thing.split(' ', 1)[1]}." \
            if thing.lower().startswith("in ") else f"{subject} prepares and enters {thing.split(' ', 1)[1]}."
    return patterns.get(kind, f"{subject} plans and delivers the work to {lowered}.")


def infrastructure_blocks(signals: Signals) -> dict[str, list[dict[str, Any]]]:
    """Key activities, key resources and key partners."""
    brief = signals.brief
    activities = [_item(objective_activity(signals.subject, objective),
                        f"The objective \u201c{objective}\u201d asks for this.") for objective in brief.objectives[:4]]
    activities += _fill(signals, "key_activities")
    resources = _fill(signals, "key_resources")
    if brief.team_size:
        resources.insert(0, _item(f"A team of {brief.team_size} people carries the programme.",
                                  "The session's team size."))
    if brief.budget is not None:
        resources.insert(1 if brief.team_size else 0,
                         _item(f"A programme budget of {_money(brief.budget)} funds the work.",
                               "The session's budget."))
    if brief.business:
        resources.append(_item(f"{signals.subject} brings its know-how and reputation as "
                               f"{_article(signals.offering)} {signals.offering}.",
                               "What the business description says it is."))
    if not resources:
        resources.append(_item(f"The people behind {signals.the_offering} are its key resource.",
                               "The session names no team, budget or business."))
    partners = _fill(signals, "key_partners") or [
        _item(f"Suppliers provide what {signals.the_offering} depends on.", "No partner is named in the session.")]
    if not activities:
        activities = [_item(f"{signals.subject} produces and delivers what it sells.",
                            "The business description names no objective.")]
    return {"key_activities": activities, "key_resources": resources, "key_partners": partners}


def finance_blocks(signals: Signals) -> dict[str, list[dict[str, Any]]]:
    """Cost structure and revenue streams."""
    brief = signals.brief
    costs = []
    if brief.team_size:
        costs.append(_item(f"Salaries of the {brief.team_size}-person team are a fixed cost.",
                           "The session's team size."))
    if brief.budget is not None:
        until = f" until {brief.deadline.isoformat()}" if brief.deadline else ""
        costs.append(_item(f"The programme invests {_money(brief.budget)}{until}.", "The session's budget."))
    costs += _fill(signals, "cost_structure")
    costs += _facts_for(signals, "cost_structure")
    if not costs:
        costs.append(_item(f"Running {signals.the_offering} is the main operating cost.",
                           "The business description."))
    revenue = _fill(signals, "revenue_streams")
    revenue += [_item(f"{signals.subject} aims to {_lower_first(objective.rstrip('. '))}.",
                      "An objective with a commercial target.")
                for objective in brief.objectives
                if _is_commercial(objective) and any(c.isdigit() for c in objective) and _starts_with_verb(objective)]
    revenue += _facts_for(signals, "revenue_streams")
    if not revenue:
        revenue.append(_item(f"Customers pay for {signals.thing}.", "The business description."))
    return {"cost_structure": costs, "revenue_streams": revenue}


def _lower_first(value: str) -> str:
    return value if value[1:2].isupper() else value[:1].lower() + value[1:]


def _starts_with_verb(objective: str) -> bool:
    first = (text.words(objective) or [""])[0]
    return bool(first) and not first[0].isdigit() and not first.endswith(("ed", "ing")) \
        and first not in ("the", "a", "an", "our", "more", "higher", "lower")


def _is_commercial(objective: str) -> bool:
    return bool(_COMMERCIAL.search(objective))


CANVAS_STAGES: tuple[tuple[int, str, Callable[[Signals], dict[str, list[dict[str, Any]]]]], ...] = (
    (30, "Finding customer segments and value propositions", customer_blocks),
    (50, "Mapping channels and customer relationships", reach_blocks),
    (65, "Identifying key activities, resources and partners", infrastructure_blocks),
    (80, "Working out the cost structure and revenue streams", finance_blocks),
)


def assemble_canvas(signals: Signals, filled: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """The canvas data: the nine blocks in the canonical order, each item once, at most ``MAX_ITEMS``."""
    blocks = []
    for key, title in BLOCKS:
        unique: dict[str, dict[str, Any]] = {}
        for item in filled.get(key, []):
            unique.setdefault(item["text"].lower(), item)
        blocks.append({"key": key, "title": title, "items": list(unique.values())[:MAX_ITEMS]})
    brief = signals.brief
    segments = [segment.label for segment in signals.segments] or ["early adopters"]
    cited = sum(1 for block in blocks for item in block["items"] if "source" in item)
    count = sum(len(b["items"]) for b in blocks)
    if brief.business:
        summary = (f"{signals.subject} is {_article(signals.offering)} {signals.offering} serving "
                   f"{_join(segments[:3])}; the canvas has {count} statements across nine blocks")
    else:
        summary = f"The canvas of {brief.name} has {count} statements across nine blocks"
    summary += f", and {cited} of them cite research facts." if cited else "."
    return {"session": {"id": brief.id, "name": brief.name}, "offering": signals.offering,
            "company": brief.company, "blocks": blocks, "key_terms": list(signals.own_terms),
            "research_terms": list(signals.research_terms[:10]),
            "research_used": bool(signals.research_terms or signals.facts), "summary": summary}


def _join(values: list[str]) -> str:
    return values[0] if len(values) == 1 else ", ".join(values[:-1]) + " and " + values[-1]


def build_canvas(brief: SessionBrief, research: dict[str, Any] | None = None) -> dict[str, Any]:
    """The business model canvas of ``brief`` (and its research), deterministically."""
    signals = read_signals(brief, research)
    filled: dict[str, list[dict[str, Any]]] = {}
    for _, _, build in CANVAS_STAGES:
        filled.update(build(signals))
    return assemble_canvas(signals, filled)


def canvas_sentences(canvas: dict[str, Any]) -> list[str]:
    """Every sentence the canvas shows (item texts and its summary), for checks and exports."""
    return [canvas["summary"]] + [item["text"] for block in canvas["blocks"] for item in block["items"]]


@operation("bmc_analysis", title="Business model canvas", ready="Business model canvas ready",
           view_label="View canvas", resumable=True, start_label="Build business model canvas",
           steps=("Reading the session", "Reading the business description, objectives and research",
                  *(message for _, message, _ in CANVAS_STAGES), "Saving the canvas"))
def analyse_business_model(ctx: JobContext) -> dict[str, Any]:
    """Builds the nine blocks of a business model canvas from the session and its latest research."""
    ctx.stage(0, "Reading the session")
    inputs = load_inputs(ctx, "research")
    brief = inputs.brief
    ctx.stage(10, "Reading the business description, objectives and research")
    signals = ctx.run_blocking(read_signals, brief, inputs.data("research"))
    filled: dict[str, list[dict[str, Any]]] = {}
    for percent, message, build in CANVAS_STAGES:
        ctx.stage(percent, message)
        filled.update(ctx.run_blocking(build, signals))
    ctx.stage(92, "Saving the canvas")
    data = assemble_canvas(signals, filled)
    data["research_analysis_id"] = inputs.analysis_id("research")
    earlier = saved_earlier(ctx, Analysis)  # a resumed job whose earlier attempt saved it already
    analysis_id = earlier.id if earlier is not None else save_row(
        Analysis(user_id=inputs.user_id, session_id=brief.id, job_id=ctx.job_id, kind="bmc", data=data))
    return {"url": f"/sessions/{brief.id}/canvas", "summary": data["summary"], "analysis_id": analysis_id,
            "session_id": brief.id}
