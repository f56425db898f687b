"""The job types the app offers: an operation registers itself with ``@operation``.

The job system knows operations only through this registry, so it stays ignorant of EPM programs,
canvases and research; ``epm.operations`` imports this module, never the other way round.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import NotFound

if TYPE_CHECKING:
    from .context import JobContext

OperationFn = Callable[["JobContext"], "dict[str, Any] | None"]


@dataclass(frozen=True)
class Operation:
    """A kind of long operation.

    ``title`` names it while it runs ("EPM generation"), ``ready`` announces its result
    ("EPM program ready") and ``view_label`` labels the link to it ("View program"). ``heading`` names
    it where it is offered ("EPM program", else the title) and ``start_label`` labels the button that
    starts it ("Generate EPM program"); ``running_label`` is what that button says while it runs.
    """

    name: str
    title: str
    fn: OperationFn
    ready: str
    view_label: str
    description: str = ""
    requires_session: bool = False
    resumable: bool = False
    validate: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    steps: tuple[str, ...] = ()
    needs: tuple[str, ...] = ()
    heading: str = ""
    start_label: str = ""

    @property
    def running_label(self) -> str:
        return f"{self.title} in progress…"

    def clean_params(self, params: dict[str, Any]) -> dict[str, Any]:
        """The parameters checked by the operation's ``validate`` (raising ValidationFailed)."""
        return self.validate(params) if self.validate else params

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "title": self.title, "ready": self.ready, "view_label": self.view_label,
                "heading": self.heading, "start_label": self.start_label, "running_label": self.running_label,
                "description": self.description, "requires_session": self.requires_session,
                "resumable": self.resumable, "steps": list(self.steps), "needs": list(self.needs)}


_operations: dict[str, Operation] = {}


def operation(name: str, *, title: str, ready: str | None = None, view_label: str = "View result",
              description: str = "", requires_session: bool = True, resumable: bool = False,
              validate: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
              steps: tuple[str, ...] = (), needs: tuple[str, ...] = (), heading: str = "",
              start_label: str = "") -> Callable[[OperationFn], OperationFn]:
    """Register ``fn(ctx) -> result`` as the operation ``name``.

    The function reports progress through ``ctx`` and returns a small JSON-able dict; a ``url``
    in it is where the user views the result. An operation that ``requires_session`` is started
    for one strategy session, by the app's session routes. ``validate(params)`` checks parameters
    before a job is created. A ``resumable`` operation may run again, from the start or from the
    checkpoints it kept (``ctx.checkpoint``), when the process running it dies or stops: it must be
    deterministic and its side effects idempotent. ``steps`` names the stages the operation
    reports, in order (the step timeline); ``needs`` names the session fields that must not be empty
    for it to succeed (the app refuses to start it otherwise, and says which).
    """

    def register(fn: OperationFn) -> OperationFn:
        doc = (fn.__doc__ or "").strip().splitlines()
        _operations[name] = Operation(name=name, title=title, fn=fn, ready=ready or f"{title} finished",
                                      view_label=view_label, description=description or (doc[0] if doc else ""),
                                      requires_session=requires_session, resumable=resumable,
                                      validate=validate, steps=tuple(steps), needs=tuple(needs),
                                      heading=heading or title, start_label=start_label or f"Run {title.lower()}")
        return fn

    return register


def unregister(name: str) -> None:
    """Withdraw the operation ``name`` (one an app is built without); an unknown name is ignored."""
    _operations.pop(name, None)


def get_operation(name: str) -> Operation:
    try:
        return _operations[name]
    except KeyError:
        known = ", ".join(sorted(_operations)) or "none"
        raise NotFound(f"There is no operation {name!r}. Known operations: {known}.",
                       code="unknown_operation") from None


def all_operations() -> list[Operation]:
    return sorted(_operations.values(), key=lambda op: op.name)
