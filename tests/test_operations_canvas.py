"""The business model canvas: nine blocks filled from the session's words, the same every time."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from epm.operations.canvas import BLOCKS, build_canvas
from epm.operations.inputs import SessionBrief

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

RESEARCH = {"read": 3, "failed": 0, "key_terms": [
    {"term": "commuters", "count": 40, "pages": 3}, {"term": "e-bike", "count": 31, "pages": 3},
    {"term": "repair", "count": 12, "pages": 2}]}


def block(canvas: dict, key: str) -> list[str]:
    return [item["text"] for item in next(b for b in canvas["blocks"] if b["key"] == key)["items"]]


def test_canvas_has_the_nine_blocks_in_order_each_with_reasoned_items():
    canvas = build_canvas(MEAL_KITS)
    assert [b["key"] for b in canvas["blocks"]] == [key for key, _ in BLOCKS]
    assert len(canvas["blocks"]) == 9
    for each in canvas["blocks"]:
        assert 1 <= len(each["items"]) <= 6, each["key"]
        assert all(item["text"] and item["basis"] for item in each["items"])
        texts = [item["text"].lower() for item in each["items"]]
        assert len(texts) == len(set(texts)), each["key"]


def test_canvas_is_specific_to_the_session():
    canvas = build_canvas(MEAL_KITS)
    assert canvas["offering"] == "subscription meal-kit service"
    assert block(canvas, "customer_segments")[0] == "Busy families in Lyon"
    assert "Recurring subscription fees for the subscription meal-kit service" in block(canvas, "revenue_streams")
    assert "Target: Grow monthly revenue by 20%" in block(canvas, "revenue_streams")
    assert "Delivery and logistics partners" in block(canvas, "key_partners")
    assert "Local producers and suppliers" in block(canvas, "key_partners")
    assert "Launch in 3 new cities" in block(canvas, "key_activities")
    assert block(canvas, "key_resources")[:2] == ["A team of 6 people", "A programme budget of 250,000"]
    assert "Programme investment of 250,000 until 2025-12-19" in block(canvas, "cost_structure")
    assert "Convenience: saves busy families in Lyon time and effort" in block(canvas, "value_propositions")
    # Drivers are hired, not served: an objective about staff does not make a customer segment.
    assert "Drivers" not in block(canvas, "customer_segments")
    basis = next(item["basis"] for item in next(b for b in canvas["blocks"] if b["key"] == "revenue_streams")["items"])
    assert basis == "\u201csubscription\u201d in the business description"


def test_different_businesses_get_different_canvases():
    meal_kits, consultancy = build_canvas(MEAL_KITS), build_canvas(CONSULTANCY)
    assert block(consultancy, "customer_segments")[0] == "SMEs"
    assert "Fees for advice, training or courses" in block(consultancy, "revenue_streams")
    assert "Contracts with business clients" in block(consultancy, "revenue_streams")
    assert "A clear route to certification and compliance" in block(consultancy, "value_propositions")
    assert "Certification bodies and accredited auditors" in block(consultancy, "key_partners")
    for key, _ in BLOCKS:
        assert block(meal_kits, key) != block(consultancy, key), key


def test_same_session_gives_the_same_canvas():
    assert build_canvas(MEAL_KITS, RESEARCH) == build_canvas(MEAL_KITS, RESEARCH)


def test_research_key_terms_feed_segments_and_value_propositions():
    brief = SessionBrief(id=3, name="Bike shop", business="A bike repair workshop in Utrecht.")
    without, with_research = build_canvas(brief), build_canvas(brief, RESEARCH)
    assert "Commuters" not in block(without, "customer_segments")
    assert "Commuters" in block(with_research, "customer_segments")
    assert ("Speak to what the market discusses: commuters, e-bike, repair"
            in block(with_research, "value_propositions"))
    assert with_research["research_used"] and not without["research_used"]


def test_sparse_session_still_fills_every_block():
    canvas = build_canvas(SessionBrief(id=4, name="Project Nova"))
    assert canvas["offering"] == "Project Nova"
    assert all(b["items"] for b in canvas["blocks"])
    assert block(canvas, "customer_segments") == ["Early adopters who need Project Nova"]


def test_offering_is_read_from_the_first_sentence():
    assert SessionBrief(id=1, name="x", business="We sell handmade ceramic mugs to cafes. More.").offering \
        == "handmade ceramic mugs"
    assert SessionBrief(id=1, name="x", business="Our company is a bike courier network in Ghent").offering \
        == "bike courier network"
    assert SessionBrief(id=1, name="Project Nova").offering == "Project Nova"


def test_an_item_found_twice_is_listed_once_with_its_first_basis():
    brief = SessionBrief(id=5, name="Spokes", business="A repair workshop for cyclists.")
    canvas = build_canvas(brief, {"read": 1, "key_terms": [{"term": "cyclists", "count": 4, "pages": 1}]})
    segments = next(b for b in canvas["blocks"] if b["key"] == "customer_segments")["items"]
    assert segments == [{"text": "Cyclists", "basis": "\u201cfor cyclists\u201d in the business description"}]
