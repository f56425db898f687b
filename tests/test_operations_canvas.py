"""The business model canvas: sentences from the session's words, every customer group, the same every time.

``grammar_problems`` is a small rule-based checker run over every sentence of every canvas built
here: each must start with a capital, end a sentence, have a finite verb, agree in number on the
forms the generator uses, and carry no clause spliced into a noun phrase (the old "Know-how and
reputation of the Northside Roasters is a specialty coffee chain").
"""

from __future__ import annotations

import json
import re
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest

from epm.operations.canvas import BLOCKS, build_canvas, canvas_sentences, objective_activity
from epm.operations.inputs import SessionBrief
from epm.operations.research import build_report, extract_page

DATA = Path(__file__).parent / "data" / "coffee"

MEAL_KITS = SessionBrief(
    id=1, name="Lyon meal kits",
    business="We run a subscription meal-kit service for busy families in Lyon, delivering fresh local "
             "ingredients every week.",
    objectives=("Launch in 3 new cities", "Build a mobile app for ordering", "Hire 5 delivery drivers",
                "Grow monthly revenue by 20%"),
    budget=Decimal("250000"), deadline=date(2025, 12, 19), team_size=6)

CONSULTANCY = SessionBrief(
    id=2, name="Audit advisory",
    business="An advisory firm for SMEs that need ISO 27001 certification.",
    objectives=("Win 12 new clients",), budget=None, team_size=12)

BIKES = SessionBrief(id=3, name="Bike shop", business="A bike repair workshop in Utrecht.")
SPARSE = SessionBrief(id=4, name="Project Nova")
ODD = SessionBrief(id=6, name="Odd objectives", business="Helios runs a network of 12 solar installers for homeowners.",
                   objectives=("20% more revenue", "Address churn in the north", "Get ISO 9001 certified",
                               "Increases margins"), team_size=4)

RESEARCH = {"read": 3, "failed": 0, "key_terms": [
    {"term": "commuters", "count": 40, "pages": 3}, {"term": "e-bike", "count": 31, "pages": 3},
    {"term": "repair", "count": 12, "pages": 2}]}


def coffee_brief() -> SessionBrief:
    raw = json.loads((DATA / "session.json").read_text())
    return SessionBrief(id=7, name=raw["name"], business=raw["business"], objectives=tuple(raw["objectives"]),
                        budget=Decimal(raw["budget"]), deadline=date.fromisoformat(raw["deadline"]),
                        team_size=raw["team_size"], source_urls=tuple(raw["source_urls"]))


def coffee_research() -> dict:
    """The research report of the three saved coffee pages, as the research job builds it."""
    raw = json.loads((DATA / "session.json").read_text())
    sources = []
    for url, name in raw["pages"].items():
        entry = {"url": url, "ok": True, "final_url": url}
        entry.update(extract_page((DATA / name).read_bytes(), "text/html"))
        entry["facts"] = [{**fact, "url": url, "source": entry["title"]} for fact in entry["facts"]]
        sources.append(entry)
    return build_report(coffee_brief(), sources)


# -- the grammar checker ---------------------------------------------------------------------------
_BASES_TEXT = """be do have go make give take get keep run sell serve offer buy use visit pay earn bring carry fund
need grow open launch build design hold cost fit select train recruit onboard measure redesign win prepare plan
deliver work aim answer look give set leave trust manage develop release analyse market extend back check advise
account spend reach add rise switch name renew ask say grow order average fill provide supply supports support
reduce enter maintain carry fulfil deliver apply help pause skip cancel save invest"""
_BASES = _BASES_TEXT.split()
_IRREGULAR = "is are was were has had does did can will would may must should could sold bought paid grew rose " \
             "ran brought built held kept made gave took got left said set cost"
_VERBS = frozenset({form for base in _BASES for form in (base, base + "s", base + "es", base + "ed", base + "d",
                                                          base[:-1] + "ies" if base.endswith("y") else base)}
                   | set(_IRREGULAR.split()))
_PLURAL_SUBJECTS = "customers guests restaurants families clients subscribers partners providers shoppers " \
                   "members visitors sellers suppliers producers commuters students staff"
_SINGULAR_SUBJECTS = "team business platform company programme chain"


def grammar_problems(sentence: str) -> list[str]:
    """What is wrong with ``sentence`` as a sentence of a canvas (empty when nothing is)."""
    problems = []
    words = re.findall(r"[\w'’-]+", sentence)
    lower = [word.lower() for word in words]
    if not sentence[:1].isupper() and not sentence[:1].isdigit():
        problems.append("does not start with a capital letter")
    if sentence.rstrip()[-1:] not in ".!?":
        problems.append("does not end with a full stop")
    if not _VERBS & set(lower):
        problems.append("has no finite verb")
    if re.search(r"\b(\w+) \1\b", sentence, re.IGNORECASE):
        problems.append("repeats a word")
    if re.search(r"\ba [aeio]\w", sentence) or re.search(r"\ban [bcdfgjklmnpqrstvwxz]\w", sentence):
        problems.append("uses the wrong article")
    if re.search(r"\.\.|\s[,.;:]|[{}]|\s{2}", sentence):
        problems.append("has stray punctuation or a placeholder")
    if re.search(r"\bthe (?:[A-Z][\w-]+ )+(?:is|are) (?:an?|the)\b", sentence) or re.search(
            r"\b(?:of|for|to|with|from|by|as) (?:the |a |an )?(?:[A-Z][\w-]* )+(?:is|are) (?:an?|the)\b", sentence):
        problems.append("splices a clause into a noun phrase")
    # Number agreement on the subjects the generator uses, when they open the sentence.
    opening = r"^(?:The |A |An )?(?:[\w'’-]+ ){0,2}?"
    if re.search(rf"{opening}(?:{'|'.join(_PLURAL_SUBJECTS.split())}) (?:is|was|has|offers|buys|uses|pays|visits)\b",
                 sentence, re.IGNORECASE) or re.search(
            rf"{opening}(?:{'|'.join(_SINGULAR_SUBJECTS.split())}) (?:are|were|have|offer|buy|use|pay|visit)\b",
            sentence, re.IGNORECASE):
        problems.append("subject and verb do not agree")
    return problems


@pytest.mark.parametrize("bad", [
    "Know-how and reputation of the Northside Roasters is a specialty coffee chain",
    "Know-how and reputation of the Northside Roasters is a specialty coffee chain.",
    "A specialty coffee chain for restaurants",
    "Delivery and logistics partners.",
    "Restaurants",
    "The guests is happy with a app.",
    "Home delivery to {segment}.",
])
def test_the_grammar_checker_rejects_what_the_old_canvas_wrote(bad):
    assert grammar_problems(bad)


def test_the_grammar_checker_accepts_plain_sentences():
    for good in ("Northside Roasters offers specialty coffee to café guests and wholesale restaurant customers.",
                 "Mobile orders now account for 31% of morning sales at specialty coffee chains with an app.",
                 "A team of 18 people carries the programme."):
        assert grammar_problems(good) == [], good


@pytest.mark.parametrize("name", ["meal kits", "consultancy", "bikes", "sparse", "coffee", "coffee with research",
                                  "bikes with research terms", "odd objectives"])
def test_every_canvas_sentence_is_grammatical(name):
    canvas = {"meal kits": lambda: build_canvas(MEAL_KITS), "consultancy": lambda: build_canvas(CONSULTANCY),
              "bikes": lambda: build_canvas(BIKES), "sparse": lambda: build_canvas(SPARSE),
              "coffee": lambda: build_canvas(coffee_brief()),
              "coffee with research": lambda: build_canvas(coffee_brief(), coffee_research()),
              "bikes with research terms": lambda: build_canvas(BIKES, RESEARCH),
              "odd objectives": lambda: build_canvas(ODD)}[name]()
    found = {sentence: grammar_problems(sentence) for sentence in canvas_sentences(canvas)}
    assert {sentence: problems for sentence, problems in found.items() if problems} == {}


# -- the canvas ------------------------------------------------------------------------------------
def block(canvas: dict, key: str) -> list[str]:
    return [item["text"] for item in next(b for b in canvas["blocks"] if b["key"] == key)["items"]]


def test_canvas_has_the_nine_blocks_in_order_each_with_reasoned_items():
    canvas = build_canvas(MEAL_KITS)
    assert [b["key"] for b in canvas["blocks"]] == [key for key, _ in BLOCKS]
    for each in canvas["blocks"]:
        assert 1 <= len(each["items"]) <= 6, each["key"]
        assert all(item["text"] and item["basis"] for item in each["items"])
        texts = [item["text"].lower() for item in each["items"]]
        assert len(texts) == len(set(texts)), each["key"]


def test_coffee_segments_cover_both_the_cafe_guests_and_the_wholesale_restaurants():
    canvas = build_canvas(coffee_brief())
    assert canvas["company"] == "Northside Roasters" and canvas["offering"] == "specialty coffee chain"
    assert block(canvas, "customer_segments") == [
        "Guests visit the 14 cafés to buy specialty coffee in person.",
        "The 60 wholesale restaurant customers buy specialty coffee from Northside Roasters."]
    assert block(canvas, "value_propositions")[0] == \
        "Northside Roasters offers specialty coffee to café guests and wholesale restaurant customers."


def test_every_customer_group_named_in_a_description_becomes_a_segment():
    cases = {
        "Pinecrest is a bakery chain with 6 bakeries and 25 hotel clients.": ["bakery customers", "hotel clients"],
        "We run a gym chain with 3 gyms for students and office workers.": ["students and office workers"],
        "Brightside is a dental group with 9 clinics and 40 corporate accounts.": ["clinic patients",
                                                                                  "corporate accounts"],
    }
    from epm.operations.canvas import read_signals

    for business, groups in cases.items():
        labels = [segment.label for segment in read_signals(SessionBrief(id=9, name="x", business=business)).segments]
        for group in groups:
            assert any(group in label for label in labels), (business, labels)


def test_key_activities_say_what_each_objective_asks_rather_than_copy_it():
    canvas = build_canvas(coffee_brief())
    activities = block(canvas, "key_activities")
    assert "Northside Roasters selects sites, fits them out and opens 10 cafés in Denver and Salt Lake City." \
        in activities
    assert "Northside Roasters designs, builds and runs the mobile order-ahead app." in activities
    for objective in coffee_brief().objectives:
        assert objective not in activities
    assert objective_activity("The business", "Hire 5 delivery drivers") == \
        "The business recruits, onboards and trains 5 delivery drivers."


def test_research_facts_feed_segments_channels_and_revenue_with_their_sources():
    canvas = build_canvas(coffee_brief(), coffee_research())
    by_key = {b["key"]: b["items"] for b in canvas["blocks"]}
    cited = {key: [item for item in items if "source" in item] for key, items in by_key.items()}
    assert any("31% of morning sales" in item["text"] for item in cited["channels"])
    assert any("$7.80" in item["text"] or "$11 and $14" in item["text"] for item in cited["revenue_streams"])
    assert cited["customer_segments"]
    for items in cited.values():
        for item in items:
            assert item["source"]["url"].startswith("https://research.example/")
            assert "research" in item["basis"]
    assert canvas["research_used"] and "cite research facts" in canvas["summary"]


def test_reasons_are_kept_apart_from_the_statements():
    for each in build_canvas(coffee_brief())["blocks"]:
        for item in each["items"]:
            assert "(" not in item["text"] or "%" in item["text"], item  # no "(… in the description)" notes
            assert item["basis"].endswith(".")


def test_canvas_is_specific_to_the_session():
    canvas = build_canvas(MEAL_KITS)
    assert canvas["offering"] == "subscription meal-kit service"
    assert block(canvas, "customer_segments")[0] == \
        "Busy families in Lyon are customers of the subscription meal-kit service."
    assert "Subscribers pay a recurring fee for the subscription meal-kit service." in block(canvas, "revenue_streams")
    assert "The business aims to grow monthly revenue by 20%." in block(canvas, "revenue_streams")
    assert "Delivery and logistics partners carry the orders." in block(canvas, "key_partners")
    assert block(canvas, "key_resources")[:2] == ["A team of 6 people carries the programme.",
                                                  "A programme budget of 250,000 funds the work."]
    assert "The programme invests 250,000 until 2025-12-19." in block(canvas, "cost_structure")
    assert "Convenience saves busy families in Lyon time and effort." in block(canvas, "value_propositions")
    # Drivers are hired, not served: an objective about staff does not make a customer segment.
    assert not any("drivers" in text.lower() for text in block(canvas, "customer_segments"))


def test_different_businesses_get_different_canvases():
    meal_kits, consultancy = build_canvas(MEAL_KITS), build_canvas(CONSULTANCY)
    assert block(consultancy, "customer_segments")[0] == "SMEs are customers of the advisory firm."
    assert "Clients pay fees for advice, training or courses." in block(consultancy, "revenue_streams")
    assert "Clients get a clear route to certification and compliance." in block(consultancy, "value_propositions")
    for key, _ in BLOCKS:
        assert block(meal_kits, key) != block(consultancy, key), key


def test_same_session_gives_the_same_canvas():
    assert build_canvas(MEAL_KITS, RESEARCH) == build_canvas(MEAL_KITS, RESEARCH)
    assert build_canvas(coffee_brief(), coffee_research()) == build_canvas(coffee_brief(), coffee_research())


def test_research_key_terms_name_segments_the_session_does_not():
    without, with_research = build_canvas(BIKES), build_canvas(BIKES, RESEARCH)
    assert not any("commuters" in text.lower() for text in block(without, "customer_segments"))
    assert "The research names commuters as buyers in this market." in block(with_research, "customer_segments")
    assert with_research["research_used"] and not without["research_used"]


def test_sparse_session_still_fills_every_block():
    canvas = build_canvas(SPARSE)
    assert canvas["offering"] == "Project Nova"
    assert all(b["items"] for b in canvas["blocks"])
    assert block(canvas, "customer_segments") == ["Early adopters who need Project Nova are the first customers."]


def test_offering_and_company_are_read_from_the_first_sentence():
    assert SessionBrief(id=1, name="x", business="We sell handmade ceramic mugs to cafes. More.").offering \
        == "handmade ceramic mugs"
    assert SessionBrief(id=1, name="x", business="Our company is a bike courier network in Ghent").offering \
        == "bike courier network"
    named = SessionBrief(id=1, name="x", business="Northside Roasters is a specialty coffee chain with 14 cafés.")
    assert (named.company, named.offering) == ("Northside Roasters", "specialty coffee chain")
    assert SessionBrief(id=1, name="Project Nova").offering == "Project Nova"


def test_an_item_found_twice_is_listed_once_with_its_first_basis():
    brief = SessionBrief(id=5, name="Spokes", business="A repair workshop for cyclists.")
    canvas = build_canvas(brief, {"read": 1, "key_terms": [{"term": "cyclists", "count": 4, "pages": 1}]})
    segments = next(b for b in canvas["blocks"] if b["key"] == "customer_segments")["items"]
    assert segments == [{"text": "Cyclists are customers of the repair workshop.",
                         "basis": "The business description says it is \u201cfor cyclists\u201d."}]
