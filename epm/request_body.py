"""A request's JSON body checked against a pydantic model, every bad field named (``ValidationFailed``)."""

from __future__ import annotations

from typing import Any, TypeVar

from flask import request
from pydantic import BaseModel, ConfigDict, ValidationError

from .errors import ValidationFailed

Model = TypeVar("Model", bound=BaseModel)
#: A body with a field the model does not know is refused.
STRICT = ConfigDict(extra="forbid")


def parse_body(model: type[Model]) -> dict[str, Any]:
    """The request's JSON body checked against ``model``: the fields sent, or ``ValidationFailed`` per field."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise ValidationFailed("Send a JSON object as the body.", {"body": "must be a JSON object"})
    try:
        model.model_validate(body)
    except ValidationError as exc:
        fields = {".".join(str(part) for part in error["loc"]) or "body": error["msg"]
                  for error in exc.errors(include_url=False)}
        raise ValidationFailed("Please correct the marked fields.", fields) from None
    # The values as sent: the shared rules (and the operation's own) convert them.
    return body
