"""Words and key terms: a deterministic term frequency over words, without stop words.

Research reports the key terms of each page with it, and the canvas and program read the
session's own text with it, so "key term" means the same thing everywhere. ``short_name``
shortens a user's sentence into a label (a workstream's name).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

# Letters (any script) and digits, with inner apostrophes or hyphens: "don't", "meal-kit", "b2b".
_WORD = re.compile(r"[^\W_]+(?:['’\-][^\W_]+)*")

_STOP_WORDS = """
a about above across after again against all almost along also although always am among an and another any
anyone anything are around as at away back be became because become been before being below between both
but by can cannot could did do does doing done down during each either else enough etc even ever every
few for from further get gets getting give given go goes going got had has have having he her here hers
herself him himself his how however i if in into is it its itself just keep last least less let like
made make makes many may me might more most much must my myself need never new next no nor not now of off
often on once one only onto or other others our ours ourselves out over own per perhaps please put quite
rather really same see seem seen several shall she should since so some something still such take than
that the their theirs them themselves then there these they thing things this those though through thus
to together too toward towards under until up upon us use used using very via want was way we well were
what whatever when where whether which while who whom whose why will with within without would yes yet
you your yours yourself yourselves
"""
STOP_WORDS = frozenset(_STOP_WORDS.split())


def words(text: str) -> list[str]:
    """The words of ``text``, lower-cased, in order (numbers included)."""
    return [match.group(0).replace("’", "'").lower() for match in _WORD.finditer(text)]


def is_term(word: str) -> bool:
    """Whether ``word`` can be a key term: three letters or more, not a stop word, not a number."""
    return len(word) >= 3 and word not in STOP_WORDS and not word.replace("-", "").isdigit() \
        and not word.endswith("'s") and any(char.isalpha() for char in word)


def term_counts(tokens: Iterable[str]) -> Counter[str]:
    """How often each key term occurs; a plural is counted with its singular when both occur."""
    counts = Counter(word for word in tokens if is_term(word))
    for word in sorted(counts):
        if word.endswith("s") and not word.endswith("ss") and word[:-1] in counts:
            counts[word[:-1]] += counts.pop(word)
    return counts


def top_terms(counts: Counter[str], limit: int = 10) -> list[dict[str, int | str]]:
    """The ``limit`` most frequent terms as ``{"term", "count"}``, ties broken alphabetically."""
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return [{"term": term, "count": count} for term, count in ranked[:limit]]


def key_terms(text: str, limit: int = 10) -> list[dict[str, int | str]]:
    """The key terms of ``text``, most frequent first."""
    return top_terms(term_counts(words(text)), limit)


def short_name(value: str, limit: int = 60) -> str:
    """``value`` cut at a word boundary to at most ``limit`` characters."""
    value = " ".join(value.split()).rstrip(".")
    if len(value) <= limit:
        return value
    return value[:limit].rsplit(" ", 1)[0].rstrip(",;:") + "…"
