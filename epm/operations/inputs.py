"""What the operations read: the strategy session as a plain ``SessionBrief``, and its latest analyses.

The generators take a ``SessionBrief`` rather than the model so they stay pure functions that tests
can call without an app or a database.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from ..extensions import db
from ..jobs import OperationError
from ..models import Analysis, StrategySession
from .text import short_name

if TYPE_CHECKING:
    from ..jobs import JobContext

_SENTENCE_END = re.compile(r"(?<=[.!?])\s|\n")
_LEAD = re.compile(r"^(?:we(?:'re| are| run| operate| sell| offer| make| provide| build)?|our (?:company|business) "
                   r"(?:is|runs|sells|offers)|it is|this is)\s+", re.IGNORECASE)
_OFFERING_END = re.compile(r"\s+(?:for|to|that|which|who|in|at|across|with|and want|serving|so)\b.*$", re.IGNORECASE)
_ARTICLE = re.compile(r"^(?:an?|the|our)\s+", re.IGNORECASE)
# "Northside Roasters is a specialty coffee chain": the company's name, then what it is.
_NAMED = re.compile(r"^(?P<name>(?:[A-Z0-9][\w&'’.-]*\s+){0,4}[A-Z0-9][\w&'’.-]*)\s+(?:is|are|runs|operates)\s+"
                    r"(?:an?|the)\s+(?P<rest>.+)$")


@dataclass(frozen=True)
class SessionBrief:
    """A strategy session as the generators see it."""

    id: int
    name: str
    business: str = ""
    objectives: tuple[str, ...] = ()
    budget: Decimal | None = None
    deadline: date | None = None
    team_size: int | None = None
    source_urls: tuple[str, ...] = ()

    @classmethod
    def from_session(cls, session: StrategySession) -> SessionBrief:
        return cls(id=session.id, name=session.name, business=(session.business or "").strip(),
                   objectives=_texts(session.objectives),
                   budget=Decimal(session.budget) if session.budget is not None else None,
                   deadline=session.deadline, team_size=session.team_size,
                   source_urls=_texts(session.source_urls))

    @property
    def offering(self) -> str:
        """What the business offers, in its own words ("subscription meal-kit service"), else the session name.

        Read from the first sentence of the description, without "We run a" and without what follows
        "for", "in", "to" and the like.
        """
        first = _SENTENCE_END.split(self.business.strip(), maxsplit=1)[0].rstrip(".!? ")
        named = _NAMED.match(first)
        if named:
            first = named.group("rest")
        offering = _ARTICLE.sub("", _OFFERING_END.sub("", _LEAD.sub("", first))).strip(" ,;:")
        return short_name(offering, 60) if offering else self.name

    @property
    def company(self) -> str | None:
        """The business's own name when the description starts with it ("Northside Roasters is a ...")."""
        first = _SENTENCE_END.split(self.business.strip(), maxsplit=1)[0]
        named = _NAMED.match(first)
        return named.group("name") if named and named.group("name").lower() not in ("we", "it", "this") else None


def _texts(values: list[str] | None) -> tuple[str, ...]:
    """The non-blank entries of a JSON list, stripped."""
    return tuple(value.strip() for value in values or () if isinstance(value, str) and value.strip())


@dataclass(frozen=True)
class Inputs:
    """What an operation reads, as plain data: the brief, its owner and the latest analyses asked for."""

    brief: SessionBrief
    user_id: int
    analyses: dict[str, tuple[int, dict[str, Any]]] = field(default_factory=dict)

    def data(self, kind: str) -> dict[str, Any] | None:
        found = self.analyses.get(kind)
        return found[1] if found else None

    def analysis_id(self, kind: str) -> int | None:
        found = self.analyses.get(kind)
        return found[0] if found else None


def load_inputs(ctx: JobContext, *kinds: str) -> Inputs:
    """The job's session and its latest analyses of ``kinds``, copied out; the database session is closed.

    Nothing returned is an ORM object, so the operation holds no connection while it computes.
    """
    try:
        session = load_session(ctx)
        analyses = {}
        for kind in kinds:
            row = latest_analysis(session, kind)
            if row is not None:
                analyses[kind] = (row.id, dict(row.data or {}))
        return Inputs(brief=SessionBrief.from_session(session), user_id=session.user_id, analyses=analyses)
    finally:
        db.session.remove()


def save_row(row: Analysis | Any) -> int:
    """Insert ``row`` in one short transaction and close the session; the new row's id."""
    try:
        db.session.add(row)
        db.session.commit()
        return row.id
    finally:
        db.session.remove()


def load_session(ctx: JobContext) -> StrategySession:
    """The job's strategy session, if it belongs to the job's user; ``OperationError`` otherwise."""
    session = None
    if ctx.session_id and ctx.session_id.isdigit():
        session = StrategySession.query.filter_by(id=int(ctx.session_id), user_id=int(ctx.user_id)).first()
    if session is None:
        raise OperationError("The strategy session for this job no longer exists.", code="session_not_found")
    return session


def latest_analysis(session: StrategySession, kind: str) -> Analysis | None:
    """The newest analysis of ``kind`` ('bmc' or 'research') of the session, by its owner."""
    return (Analysis.query.filter_by(session_id=session.id, user_id=session.user_id, kind=kind)
            .order_by(Analysis.created_at.desc(), Analysis.id.desc()).first())


def saved_earlier(ctx: JobContext, model: type) -> Any:
    """The ``model`` row an earlier attempt of this job saved before its process died (None if none):
    a resumed job returns it instead of saving its result twice."""
    return model.query.filter_by(job_id=ctx.job_id).first() if ctx.attempt > 1 else None
