"""Reading a page's prose: its sentences, an extractive summary, and the key facts it states.

A *fact* is a sentence that carries something a strategist can check and cite: a price, a
percentage, a date, a figure or a place. A *summary* is the few sentences that carry most of the
page's key terms (a frequency-based extractive summary, the oldest and most predictable method),
in the page's own order. Both are deterministic: the same page gives the same result.

No NLP library is used: sentence splitting with an abbreviation list and a few regular expressions
are enough for web prose, and a tokenizer package (NLTK's punkt, spaCy) would add a model download
at install time that the app's offline deployments cannot make.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from typing import Any

from . import text

SUMMARY_SENTENCES = 3
MAX_FACTS = 12
MIN_WORDS = 5
MAX_WORDS = 60
SIMILAR = 0.75

_ABBREVIATIONS = ("e.g.", "i.e.", "etc.", "vs.", "approx.", "no.", "st.", "mr.", "mrs.", "ms.", "dr.", "inc.",
                  "ltd.", "co.", "jan.", "feb.", "mar.", "apr.", "jun.", "jul.", "aug.", "sep.", "sept.", "oct.",
                  "nov.", "dec.", "u.s.", "u.k.")
_BOUNDARY = re.compile(r"(?<=[.!?])[\"”’)]*\s+(?=[\"“(]?[A-Z0-9$€£])")

_MONTHS = ("January|February|March|April|May|June|July|August|September|October|November|December|"
           "Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sep|Sept|Oct|Nov|Dec")
KINDS: dict[str, re.Pattern[str]] = {
    "price": re.compile(r"[$€£¥]\s?\d[\d,]*(?:\.\d+)?(?:\s?(?:k|m|bn|million|billion|thousand)\b)?"
                        r"|\b\d[\d,]*(?:\.\d+)?\s?(?:dollars|euros|pounds|USD|EUR|GBP)\b", re.IGNORECASE),
    "percentage": re.compile(r"\b\d+(?:[.,]\d+)?\s?(?:%|per ?cent\b|percent\b)", re.IGNORECASE),
    "date": re.compile(rf"\b(?:(?:{_MONTHS})\.?\s+(?:\d{{1,2}},?\s+)?(?:19|20)\d\d|\d{{1,2}}\s+(?:{_MONTHS})\s+"
                       rf"(?:19|20)\d\d|Q[1-4]\s+(?:19|20)\d\d|(?:19|20)\d\d-\d\d-\d\d|(?:in|by|since|until|from|"
                       rf"during|of)\s+(?:19|20)\d\d)\b"),
    "figure": re.compile(r"\b\d[\d,]*(?:\.\d+)?\b(?!\s?%)"),
    "place": re.compile(r"\b(?:in|at|across|from|near|to|around|throughout)\s+((?:[A-Z][\w'’.-]+)"
                        r"(?:\s+(?:(?:and|&)\s+)?[A-Z][\w'’.-]+)*)"),
}
# Capitalised words after "in" or "at" that are not places.
_NOT_PLACES_TEXT = """January February March April May June July August September October November December
Monday Tuesday Wednesday Thursday Friday Saturday Sunday Q1 Q2 Q3 Q4 The A An Our We It This That These Those I"""
_NOT_PLACES = frozenset(_NOT_PLACES_TEXT.split())


def sentences(prose: str) -> list[str]:
    """The sentences of ``prose``, whitespace normalised, split at ., ! or ? (not after an abbreviation)."""
    found: list[str] = []
    for block in re.split(r"\n\s*\n|\r?\n(?=\s*[-•*]\s)", prose):
        block = " ".join(block.split())
        start = 0
        for match in _BOUNDARY.finditer(block):
            head = block[start:match.start()].strip()
            last = head.rsplit(" ", 1)[-1].lower()
            if last in _ABBREVIATIONS or re.fullmatch(r"[a-z]\.", last):
                continue
            found.append(head)
            start = match.end()
        tail = block[start:].strip()
        if tail:
            found.append(tail)
    return [sentence for sentence in found if sentence]


def fact_kinds(sentence: str) -> list[str]:
    """What a sentence states that can be checked: price, percentage, date, figure, place (in that order)."""
    kinds = [kind for kind, pattern in KINDS.items() if kind != "place" and pattern.search(sentence)]
    if "figure" in kinds and not _has_own_figure(sentence):
        kinds.remove("figure")
    if places(sentence):
        kinds.append("place")
    return kinds


def _has_own_figure(sentence: str) -> bool:
    """Whether a number stands on its own, not only as part of a price, percentage or date."""
    rest = sentence
    for kind in ("price", "percentage", "date"):
        rest = KINDS[kind].sub(" ", rest)
    return bool(KINDS["figure"].search(rest))


def places(sentence: str) -> list[str]:
    """Capitalised names after "in", "at", "across"... ("Denver", "Salt Lake City"), not months or days."""
    found = []
    for match in KINDS["place"].finditer(sentence):
        words = [word.rstrip(".") for word in match.group(1).split() if word not in ("and", "&")]
        name = " ".join(word for word in words if word not in _NOT_PLACES)
        if name and not name[0].isdigit():
            found.append(name)
    return found


def _is_prose(sentence: str) -> bool:
    count = len(sentence.split())
    return MIN_WORDS <= count <= MAX_WORDS and sentence[-1:] in ".!?\"”)" and sentence[:1].isalnum()


def page_facts(paragraphs: Iterable[str], limit: int = MAX_FACTS) -> list[dict[str, Any]]:
    """The sentences of a page that state checkable facts, most specific first, without near-duplicates.

    Each is ``{"text", "kinds"}``; the order among equals is the page's.
    """
    candidates = []
    for position, sentence in enumerate(s for paragraph in paragraphs for s in sentences(paragraph)):
        if not _is_prose(sentence):
            continue
        kinds = fact_kinds(sentence)
        if kinds:
            candidates.append((-len(kinds), position, {"text": sentence, "kinds": kinds}))
    candidates.sort(key=lambda item: item[:2])
    return deduplicate([fact for _, _, fact in candidates])[:limit]


def deduplicate(facts: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """``facts`` without any whose words mostly repeat an earlier one's (the earlier one is kept)."""
    kept: list[dict[str, Any]] = []
    seen: list[set[str]] = []
    for fact in facts:
        tokens = set(text.words(fact["text"]))
        if any(_overlap(tokens, other) >= SIMILAR for other in seen):
            continue
        kept.append(fact)
        seen.append(tokens)
    return kept


def _overlap(first: set[str], second: set[str]) -> float:
    if not first or not second:
        return 0.0
    return len(first & second) / min(len(first), len(second))


def summarise(paragraphs: Iterable[str], limit: int = SUMMARY_SENTENCES,
              counts: Counter[str] | None = None) -> list[str]:
    """The ``limit`` sentences that carry most key terms (per word, earlier ones first on a tie), in page order.

    ``counts`` weights the terms (a report passes the counts across all pages); by default the
    page's own counts.
    """
    pool = [sentence for paragraph in paragraphs for sentence in sentences(paragraph) if _is_prose(sentence)]
    if counts is None:
        counts = text.term_counts(text.words(" ".join(pool)))
    scored = []
    for position, sentence in enumerate(pool):
        tokens = [_singular(word, counts) for word in text.words(sentence) if text.is_term(word)]
        if tokens:
            score = sum(counts.get(token, 0) for token in tokens) / len(tokens) ** 0.5
            scored.append((-score, position, sentence))
    scored.sort()
    chosen: list[tuple[int, str]] = []
    for _, position, sentence in scored:
        fact = {"text": sentence}
        if len(deduplicate([*({"text": s} for _, s in chosen), fact])) > len(chosen):
            chosen.append((position, sentence))
        if len(chosen) == limit:
            break
    return [sentence for _, sentence in sorted(chosen)]


def _singular(word: str, counts: Counter[str]) -> str:
    return word[:-1] if word.endswith("s") and word[:-1] in counts else word


def relevant(facts: Iterable[dict[str, Any]], about: str, limit: int = 2) -> list[dict[str, Any]]:
    """The facts sharing most key terms with ``about`` (at least one), best first."""
    wanted = {_stem(word) for word in text.words(about) if text.is_term(word)}
    ranked = []
    for position, fact in enumerate(facts):
        shared = wanted & {_stem(word) for word in text.words(fact["text"]) if text.is_term(word)}
        if shared:
            ranked.append((-len(shared), position, fact))
    ranked.sort(key=lambda item: item[:2])
    return [fact for _, _, fact in ranked[:limit]]


def _stem(word: str) -> str:
    """A crude stem so "orders" meets "ordering" and "cafés" meets "café"."""
    word = word.replace("é", "e")
    for suffix in ("ing", "es", "s", "ed"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[:-len(suffix)]
    return word
