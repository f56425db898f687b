"""The JSON API's contract: pydantic models that validate request bodies, and the OpenAPI 3 document.

The document at ``/api/openapi.json`` is generated from the same models that check the bodies, so
the two cannot drift apart; the test suite fuzzes every operation of it with Schemathesis against a
real server. Why generate it here rather than adopt spectree or flask-openapi3: both take over the
routes' validation and answer errors in their own format, while this API answers every error as
``{"error": {"code", "message"}}``, and the job API's views stay plain Flask views (a blueprint of the
job system, which must not depend on the web layer's libraries). What is left is a table of
operations and pydantic's own JSON Schema output: about a page of code.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any, Literal

from flask import Blueprint, jsonify
from pydantic import BaseModel, ConfigDict, Field

from .jobs.api import StartJob
from .jobs.job import JobStatus
from .request_body import STRICT as _STRICT
from .request_body import parse_body

bp = Blueprint("api_schema", __name__, url_prefix="/api")

__all__ = ["StartJob", "parse_body"]


# -- request bodies -------------------------------------------------------------------------------------
class SessionFields(BaseModel):
    """A strategy session's fields; the same rules as the form then apply (epm.web.session_input)."""

    model_config = _STRICT
    name: str = Field(min_length=1, max_length=200)
    business: str | None = Field(default=None, max_length=5000)
    objectives: list[str] | None = Field(default=None, max_length=50)
    budget: Decimal | str | None = Field(default=None, description="A non-negative amount, like 250000.")
    deadline: date | str | None = Field(default=None, description="A date, like 2026-06-30.")
    team_size: int | str | None = Field(default=None, description="People, from 1 to 500.")
    source_urls: list[str] | None = Field(default=None, max_length=50, description="http(s) pages to research.")


class SessionPatch(SessionFields):
    """Only the fields sent are changed."""

    name: str | None = Field(default=None, min_length=1, max_length=200)


# -- responses ------------------------------------------------------------------------------------------
class ErrorDetail(BaseModel):
    model_config = ConfigDict(extra="allow")
    code: str
    message: str


class ErrorBody(BaseModel):
    error: ErrorDetail


class StepOut(BaseModel):
    name: str = Field(description="The step as the operation declares it (GET /api/operations).")
    started_at: str | None = Field(description="When it started (server time); null while to come.")
    ended_at: str | None = Field(description="When the next step, or the job's end, ended it.")
    seconds: float | None = Field(description="Its duration, once it ended.")


class TimelineOut(BaseModel):
    step: int | None = Field(description="Index of the step running now (the last one reached once the job "
                                         "ended); null before the first.")
    steps: list[StepOut]


class EstimateOut(BaseModel):
    basis: Literal["user", "everyone"] = Field(
        description="Whose earlier completed runs: the user's when they have 3, else everyone's.")
    runs: int = Field(ge=1, description="How many earlier runs (at most 20).")
    seconds: float = Field(description="Their median duration.")
    steps: list[float | None] = Field(description="The median duration of each step.")
    left: float | None = Field(description="Seconds probably left when this was sent (null once ended).")


class JobOut(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str
    job_type: str
    user_id: str
    title: str
    status: Literal[tuple(status.value for status in JobStatus)]  # type: ignore[valid-type]
    progress: int = Field(ge=0, le=100)
    message: str
    session_id: str | None
    seq: int
    created_at: str | None
    started_at: str | None
    updated_at: str | None
    completed_at: str | None
    error_code: str | None
    error: str | None
    result: dict[str, Any] | None
    retry_of: str | None
    cancel_requested: bool
    terminal: bool
    timeline: TimelineOut | None = Field(
        default=None, description="The operation's declared steps, each with its start and end; null without.")
    estimate: EstimateOut | None = Field(
        default=None, description="Time left, from earlier runs of the operation; null without any.")
    elapsed: float | None = Field(default=None, description="Seconds since it started (to its end once ended).")


class JobEnvelope(BaseModel):
    job: JobOut


class JobList(BaseModel):
    jobs: list[JobOut]


class Acknowledged(BaseModel):
    first: bool = Field(description="True for exactly one caller: the tab that announces the job.")


class OperationOut(BaseModel):
    name: str
    title: str
    ready: str
    view_label: str
    description: str
    requires_session: bool


class OperationList(BaseModel):
    operations: list[OperationOut]


class SessionOut(BaseModel):
    id: int
    name: str
    business: str
    objectives: list[str]
    budget: str | None
    deadline: str | None
    team_size: int | None
    source_urls: list[str]
    url: str
    created_at: str | None
    updated_at: str | None


class SessionEnvelope(BaseModel):
    session: SessionOut


class SessionList(BaseModel):
    sessions: list[SessionOut]


# -- the document ---------------------------------------------------------------------------------------
_JOB_ID = {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string", "maxLength": 64}}
_SESSION_ID = {"name": "session_id", "in": "path", "required": True,
               "schema": {"type": "integer", "minimum": 0, "maximum": 2**31 - 1}}
_OPERATION = {"name": "operation", "in": "path", "required": True, "schema": {"type": "string", "maxLength": 64}}
_LIST_QUERY = [
    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 20}},
    {"name": "status", "in": "query", "schema": {"type": "string", "enum": [s.value for s in JobStatus]}},
    {"name": "job_type", "in": "query", "schema": {"type": "string", "maxLength": 64}},
    {"name": "session_id", "in": "query", "schema": {"type": "string", "maxLength": 64}},
]
# Every operation may answer these: not signed in, a bad or oversized request, too many, an outage.
_ALWAYS = {"400": ErrorBody, "401": ErrorBody, "413": ErrorBody, "429": ErrorBody, "503": ErrorBody}
_EVENT_STREAM = "text/event-stream"

# (method, path, summary, parameters, request body model, {status: response model or media type})
OPERATIONS: list[tuple[str, str, str, list[dict], type[BaseModel] | None, dict[str, Any]]] = [
    ("get", "/api/operations", "The operations the app offers", [], None, {"200": OperationList}),
    ("get", "/api/background-jobs", "The user's jobs, newest first (ETag; 304 when unchanged)", _LIST_QUERY, None,
     {"200": JobList, "304": None, "422": ErrorBody}),
    ("post", "/api/background-jobs", "Start an operation that needs no session", [], StartJob,
     {"202": JobEnvelope, "404": ErrorBody, "409": ErrorBody, "422": ErrorBody}),
    ("get", "/api/background-jobs/{job_id}", "One job", [_JOB_ID], None, {"200": JobEnvelope, "404": ErrorBody}),
    ("post", "/api/background-jobs/{job_id}/cancel", "Ask a job to stop", [_JOB_ID], None,
     {"202": JobEnvelope, "404": ErrorBody, "409": ErrorBody}),
    ("post", "/api/background-jobs/{job_id}/retry", "Run a failed or cancelled job again", [_JOB_ID], None,
     {"202": JobEnvelope, "404": ErrorBody, "409": ErrorBody, "422": ErrorBody}),
    ("post", "/api/background-jobs/{job_id}/acknowledge", "Record that the user was told the job finished",
     [_JOB_ID], None, {"200": Acknowledged, "404": ErrorBody}),
    ("get", "/api/background-jobs/{job_id}/events", "The job's event stream (SSE)", [_JOB_ID], None,
     {"200": _EVENT_STREAM, "404": ErrorBody}),
    ("get", "/api/background-jobs/events", "Every job of the user as an event stream (SSE)", [], None,
     {"200": _EVENT_STREAM}),
    ("get", "/api/sessions", "The user's strategy sessions", [], None, {"200": SessionList}),
    ("post", "/api/sessions", "Create a strategy session", [], SessionFields,
     {"201": SessionEnvelope, "422": ErrorBody}),
    ("get", "/api/sessions/{session_id}", "One strategy session", [_SESSION_ID], None,
     {"200": SessionEnvelope, "404": ErrorBody}),
    ("patch", "/api/sessions/{session_id}", "Change a strategy session", [_SESSION_ID], SessionPatch,
     {"200": SessionEnvelope, "404": ErrorBody, "422": ErrorBody}),
    ("delete", "/api/sessions/{session_id}", "Delete a strategy session (409 while one of its jobs runs)",
     [_SESSION_ID], None, {"204": None, "404": ErrorBody, "409": ErrorBody}),
    ("post", "/api/sessions/{session_id}/{operation}", "Start an operation for a session", [_SESSION_ID, _OPERATION],
     None, {"202": JobEnvelope, "400": ErrorBody, "404": ErrorBody, "409": ErrorBody, "422": ErrorBody}),
]

_DESCRIPTIONS = {"200": "OK", "201": "Created", "202": "Accepted: the job runs in the background", "204": "Deleted",
                 "304": "Not modified (If-None-Match)", "400": "Bad input", "401": "Not signed in",
                 "404": "Not found", "409": "Conflict", "413": "Request too large", "422": "Invalid fields",
                 "429": "Too many requests (Retry-After)", "503": "A backend is unavailable (Retry-After)"}


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of the JSON API."""
    components: dict[str, Any] = {}

    def ref(model: type[BaseModel]) -> dict[str, str]:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(schema.pop("$defs", {}))
        components[model.__name__] = schema
        return {"$ref": f"#/components/schemas/{model.__name__}"}

    paths: dict[str, Any] = {}
    for method, path, summary, parameters, body, answers in OPERATIONS:
        responses: dict[str, Any] = {}
        for status, what in {**_ALWAYS, **answers}.items():
            entry: dict[str, Any] = {"description": _DESCRIPTIONS[status]}
            if isinstance(what, str):
                entry["content"] = {what: {"schema": {"type": "string"}}}
            elif what is not None:
                entry["content"] = {"application/json": {"schema": ref(what)}}
            if status in ("429", "503"):
                entry["headers"] = {"Retry-After": {"required": True, "schema": {"type": "string"}}}
            responses[status] = entry
        operation: dict[str, Any] = {"summary": summary, "operationId": f"{method}_{path}", "responses": responses}
        if parameters:
            operation["parameters"] = parameters
        if body is not None:
            operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": ref(body)}}}
        if method != "get":
            operation["security"] = [{"session": [], "csrf": []}]
        paths.setdefault(path, {})[method] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "epm API", "version": "1",
                 "description": "Long operations as tracked background jobs. Every error is "
                                '{"error": {"code", "message"}}.'},
        "paths": paths,
        "components": {"schemas": components, "securitySchemes": {
            "session": {"type": "apiKey", "in": "cookie", "name": "session"},
            "csrf": {"type": "apiKey", "in": "header", "name": "X-CSRFToken"}}},
        "security": [{"session": []}],
    }


@bp.get("/openapi.json")
def openapi_json():
    return jsonify(openapi_document())
