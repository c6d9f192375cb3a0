"""The archive API (HTTP, JSON, OpenAPI at ``/openapi.json``): :func:`create_app` builds it.

Served on its own (``arkiv api``, uvicorn) or mounted by the Airflow plugin. Every request carries
``Authorization: Bearer <token>`` (an access token from the municipality's identity provider when
one is configured, :mod:`.oidc`; else a credential from ``arkiv access-token add``; RFC 6750: the
scheme in any case, exactly one token, never in the URL) and may say why (``X-Purpose`` header,
percent-encoded UTF-8), which goes into the access log.

Nothing that identifies a person travels in a URL, since URLs end up in request logs, proxies and
browser histories: search text and personnummer go in the body of ``POST /api/v1/search``; a
``GET /api/v1/search`` takes only filters (system, record class, dates, storage, paging) and a
query string holding anything else is refused (400). The server's own request log is written
without query strings (:func:`install_request_log_filter`). Malformed requests (control
characters or NUL in the path, invalid UTF-8, out-of-range numbers, oversized bodies or exports,
overlong identifiers) are refused with a 4xx and a logged refusal; an unexpected error answers 500
and is logged by its type only, never with the values it carried.

Stable deep links (they survive the move from mellanarkiv to slutarkiv)::

    /api/v1/records/{system}/{source_id}                            the record (e.g. /api/v1/records/lex/27)
    /api/v1/records/{system}/{source_id}/documents/{document_id}    one document's content (?copy=)
"""


import json
import logging
import os
import re
import tempfile
import threading
from pathlib import Path
from typing import Annotated, Literal

from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from pydantic import BaseModel, Field, field_validator
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException as StarletteHTTPException

from transforms import SOFTWARE_NAME, __version__
from transforms.access import accesslog, dip, receipts
from transforms.access.auth import (
    AccessDenied,
    NotFound,
    Principal,
    Unauthenticated,
    Withheld,
    bearer_token,
)
from transforms.access.identity import principal_for
from transforms.access.oidc import InvalidToken, OidcConfig, ProviderUnavailable
from transforms.access.page import PAGE
from transforms.access.service import Archive
from transforms.common.errors import ContentError
from transforms.config.settings import Settings

PREFIX = "/api/v1"
log = logging.getLogger("arkivflode.access")

#: bounds of what a request may ask for (beyond them: 4xx, never a 500 from the database)
MAX_LIMIT, MAX_OFFSET = 500, 100_000
MAX_EXPORT_RECORDS = 1000
MAX_BODY = 1024 * 1024
MAX_URL = 4096
MAX_TEXT = 1000
#: the only query parameters a GET search takes: none of them names a person
GET_SEARCH_FILTERS = frozenset({"system", "record_class", "closed_from", "closed_to", "storage", "limit", "offset"})
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ufffd]")
_PATH_CONTROL = re.compile(r"[\x00-\x1f\x7f\ufffd]")
_IDENT = {"max_length": 200, "min_length": 1}
_LOOKS_PERSONAL = re.compile(r"(?<!\d)\d(?:[\s\-+\u2010-\u2015\u2212]{0,3}\d){9,11}(?!\d)")


def _no_controls(v: str | None) -> str | None:
    if v is not None and _CONTROL.search(v):
        raise ValueError("control characters (NUL and the like) are not allowed")
    return v


class SearchRequest(BaseModel):
    """A search: free text and personnummer only ever here, in the body, never in a URL."""

    q: str = Field(default="", max_length=MAX_TEXT, description="diarienummer, title words, party names")
    personnummer: str | None = Field(default=None, max_length=20,
                                     description="exact match; archivists and system owners only")
    system: str | None = Field(default=None, max_length=100)
    record_class: str | None = Field(default=None, max_length=100)
    closed_from: str | None = Field(default=None, max_length=40)
    closed_to: str | None = Field(default=None, max_length=40)
    storage: str | None = Field(default=None, max_length=20)
    limit: int = Field(default=20, ge=1, le=MAX_LIMIT)
    offset: int = Field(default=0, ge=0, le=MAX_OFFSET)

    _checked = field_validator("q", "personnummer", "system", "record_class", "closed_from", "closed_to",
                               "storage")(_no_controls)


class ExportRequest(BaseModel):
    """A selection for a DIP: record deep links (``system/source_id``) and/or a search."""

    records: list[Annotated[str, Field(max_length=400)]] = Field(
        default_factory=list, max_length=MAX_EXPORT_RECORDS, description="records as 'system/source_id'")
    q: str | None = Field(default=None, max_length=MAX_TEXT,
                          description="a search whose hits are added to the selection")
    system: str | None = Field(default=None, max_length=100)
    purpose: str = Field(max_length=MAX_TEXT,
                         description="why the records are handed out (the request, its diarienummer)")

    _checked = field_validator("q", "system", "purpose")(_no_controls)

    @field_validator("records")
    @classmethod
    def _records(cls, v: list[str]) -> list[str]:
        for r in v:
            _no_controls(r)
        return v


_FROM_ENV = object()


class DecisionRequest(BaseModel):
    """An archivist's decision on a quarantine case: approve with a deviation, or reject; why, kept for ever."""

    case_id: str = Field(min_length=1, max_length=300)
    decision: Literal["approve", "reject"]
    justification: str = Field(min_length=1, max_length=MAX_TEXT)

    _checked = field_validator("case_id", "justification")(_no_controls)


def create_app(settings: Settings | None = None, *, archive: Archive | None = None,
               oidc: OidcConfig | None | object = _FROM_ENV) -> FastAPI:
    """The FastAPI app for ``settings`` (from the environment when None); ``oidc``: the identity
    provider (read from the environment by default, None for the embedded default without one)."""
    settings = settings or Settings.from_env()
    oidc = OidcConfig.from_env() if oidc is _FROM_ENV else oidc
    holder = _Lazy(settings, archive, oidc)
    app = FastAPI(title=f"{SOFTWARE_NAME} archive API", version=__version__,
                  description="Search and read the mellanarkiv and slutarkiv, fetch receipts (kvittenser) and "
                              "request deliveries (E-ARK DIP). Every read is written to the access log.")
    app.state.archive = holder

    @app.exception_handler(NotFound)
    async def _not_found(_req: Request, exc: NotFound):
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(_BadRequest)
    async def _bad(_req: Request, exc: _BadRequest):
        return JSONResponse({"detail": str(exc)}, status_code=exc.status)

    @app.exception_handler(AccessDenied)
    async def _denied(_req: Request, exc: AccessDenied):
        return JSONResponse({"detail": str(exc)}, status_code=403)

    @app.exception_handler(Withheld)
    async def _withheld(_req: Request, exc: Withheld):
        return JSONResponse({"detail": str(exc), "classified": True, "secrecy_reference": exc.regulation},
                            status_code=403)

    @app.exception_handler(ContentError)
    async def _content(req: Request, exc: ContentError):
        _refuse(holder, req, "invalid content")
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.exception_handler(receipts.ReceiptRefused)
    async def _refused(_req: Request, exc: receipts.ReceiptRefused):
        return JSONResponse({"detail": str(exc), "receipt": None}, status_code=409)

    @app.exception_handler(Unauthenticated)
    async def _unauthenticated(req: Request, exc: Unauthenticated):
        challenge = "Bearer" + (f' error="{exc.error}"' if exc.error else "")
        cred = exc.credential
        who = Principal(cred.id, cred.role, cred.system, bool(cred.cleared)) if cred is not None else None
        if isinstance(exc, InvalidToken):
            who = exc.principal  # known only for a correctly signed token that has expired
        accesslog.refusal(holder.get().cat if who else None, who, "authenticate", _route_path(req), str(exc))
        return JSONResponse({"detail": str(exc)}, status_code=exc.status, headers={"WWW-Authenticate": challenge})

    @app.exception_handler(ProviderUnavailable)
    async def _provider_down(req: Request, exc: ProviderUnavailable):
        log.error("sign-in unavailable answering %s: %s", _route_path(req), exc)
        return JSONResponse({"detail": "the identity provider cannot be reached; try again later"}, status_code=503)

    @app.exception_handler(StarletteHTTPException)
    async def _http(req: Request, exc: StarletteHTTPException):
        if 400 <= exc.status_code < 500 and exc.status_code != 404:
            _refuse(holder, req, f"HTTP {exc.status_code}")
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(req: Request, exc: RequestValidationError):
        # the offending value is never echoed (it may be the personnummer someone sent in the wrong place)
        problems = [{"loc": [str(x) for x in e.get("loc", ())][:4], "type": e.get("type", "invalid")}
                    for e in exc.errors()[:10]]
        where = ", ".join(".".join(p["loc"]) + f" ({p['type']})" for p in problems)
        _refuse(holder, req, f"invalid request: {where}")
        return JSONResponse({"detail": f"invalid request: {where}", "errors": problems}, status_code=422)

    def principal(request: Request, authorization: Annotated[str | None, Header()] = None) -> Principal:
        if "access_token" in request.query_params:
            raise Unauthenticated("a token is never sent in the URL; send 'Authorization: Bearer <token>'",
                                  error="invalid_request")
        if "purpose" in request.query_params:
            # refused whoever asks (the rule is the same for all): the purpose may name a person
            _refuse(holder, request, "purpose in the query string")
            raise _BadRequest("the purpose is sent in the X-Purpose header (percent-encoded UTF-8), never in the URL")
        system = request.headers.get("x-arkiv-system") or None
        try:
            return holder.principal(bearer_token(authorization), system)
        except AccessDenied as exc:
            if not isinstance(exc, Unauthenticated):
                accesslog.refusal(None, None, "authenticate", _route_path(request), str(exc))
            raise

    def url_filters_only(request: Request) -> None:
        extra = sorted(set(request.query_params) - GET_SEARCH_FILTERS - {"access_token"})
        values = [v for k in GET_SEARCH_FILTERS for v in request.query_params.getlist(k)]
        if extra or any(_LOOKS_PERSONAL.search(v) for v in values):
            _refuse(holder, request, f"search text or an identifier in the query string ({len(extra)} "
                                     "parameter(s) not allowed there)")
            raise _BadRequest("search text and personal identifiers are never sent in the URL: use POST "
                              f"{PREFIX}/search with them in the JSON body (the URL takes only "
                              f"{', '.join(sorted(GET_SEARCH_FILTERS))})")

    def purpose_of(x_purpose: Annotated[str | None, Header(max_length=3 * MAX_TEXT)] = None) -> str:
        from urllib.parse import unquote

        # HTTP headers are ASCII: a purpose in Swedish is sent percent-encoded (UTF-8) and decoded here;
        # what it holds is masked and escaped when it is logged (accesslog.clean)
        return unquote(x_purpose or "", errors="replace")[:MAX_TEXT]

    Who = Annotated[Principal, Depends(principal)]
    Purpose = Annotated[str, Depends(purpose_of)]

    @app.get("/archive", response_class=HTMLResponse, include_in_schema=False)
    def archive_page() -> str:
        """The archivist's page: search, record view with documents and history, access log."""
        return PAGE

    @app.get(f"{PREFIX}/sign-in", tags=["access"])
    def sign_in() -> dict:
        """How to sign in: the identity provider's issuer and the client ID to use (``provider`` is null
        without one: then a credential from ``arkiv access-token``). No token needed."""
        if holder.oidc is None:
            return {"provider": None}
        doc = holder.discovery()
        return {"provider": {"issuer": holder.oidc.issuer, "client_id": holder.oidc.client_id,
                             "scope": holder.oidc.scope,
                             "resource": holder.oidc.audience if holder.oidc.audience != holder.oidc.client_id
                             else None,
                             "authorization_endpoint": doc.get("authorization_endpoint"),
                             "token_endpoint": doc.get("token_endpoint")}}

    @app.get(f"{PREFIX}/whoami", tags=["access"])
    def whoami(who: Who) -> dict:
        """The credential's name, role, scope and clearance; for a signed-in person also their name, roles and
        the archive creators they are limited to (empty: not limited by creator)."""
        return {"name": who.name, "role": who.role, "system": who.system, "cleared": who.sees_secret,
                "display_name": who.display_name, "roles": list(who.roles), "creators": list(who.creators)}

    @app.get(f"{PREFIX}/search", tags=["search"])
    def search_by_filters(_checked: Annotated[None, Depends(url_filters_only)], who: Who, why: Purpose,
                          system: Annotated[str | None, Query(max_length=100)] = None,
                          record_class: Annotated[str | None, Query(max_length=100)] = None,
                          closed_from: Annotated[str | None, Query(max_length=40)] = None,
                          closed_to: Annotated[str | None, Query(max_length=40)] = None,
                          storage: Annotated[str | None, Query(max_length=20)] = None,
                          limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 20,
                          offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0) -> dict:
        """Browse by filters only (system, record class, closing dates, storage). Search text and personnummer
        are never taken from a URL: send them in the body of ``POST /api/v1/search``."""
        r = holder.get().search(who, "", purpose=why, system=system, record_class=record_class,
                                closed_from=closed_from, closed_to=closed_to, storage=storage, limit=limit,
                                offset=offset)
        return {"total": r.total, "hits": r.hits}

    @app.post(f"{PREFIX}/search", tags=["search"])
    def search(req: SearchRequest, who: Who, why: Purpose) -> dict:
        """Search by diarienummer, title, dates, record class, system, archive creator, series, party names;
        personnummer only for archivists and system owners, exact match. Hits never show personnummer or parties."""
        r = holder.get().search(who, req.q, purpose=why, system=req.system, record_class=req.record_class,
                                closed_from=req.closed_from, closed_to=req.closed_to, storage=req.storage,
                                personnummer=req.personnummer, limit=req.limit, offset=req.offset)
        return {"total": r.total, "hits": r.hits}

    System = Annotated[str, PathParam(max_length=100, min_length=1)]
    Ident = Annotated[str, PathParam(**_IDENT)]

    @app.get(PREFIX + "/records/{system}/{source_id}", tags=["records"])
    def record(system: System, source_id: Ident, who: Who, why: Purpose) -> dict:
        """A record with its metadata and document list; ``storage`` says mellanarkiv, slutarkiv or disposed."""
        return holder.get().record(who, system, source_id, purpose=why)

    @app.get(PREFIX + "/records/{system}/{source_id}/documents/{document_id}", tags=["records"],
             response_class=StreamingResponse)
    def document(system: System, source_id: Ident, document_id: Ident, who: Who, why: Purpose,
                 copy: Literal["preservation", "original"] | None = None):
        """The document's bytes, streamed out of the stored package (never unpacked, never read whole).

        ``?copy=preservation`` (the PDF/A the archive keeps; the default when there is one) or
        ``?copy=original`` (as delivered). Authorised by the record that owns the file in the catalogue,
        not only by the one in the URL."""
        d = holder.get().document(who, system, source_id, document_id, purpose=why, copy=copy)
        headers = {"Content-Length": str(d.size), "X-Arkiv-Storage": d.storage,
                   "Content-Disposition": content_disposition(d.name)}
        if d.sha256:
            headers["X-Checksum-SHA256"] = d.sha256
        return StreamingResponse(d.chunks, media_type=d.mimetype, headers=headers)

    @app.get(PREFIX + "/packages", tags=["packages"])
    def packages(who: Who, system: Annotated[str | None, Query(max_length=100)] = None) -> dict:
        """Packages (the caller's own system's for business-system credentials), each with its receipt link."""
        return {"packages": holder.get().packages(who, system)}

    @app.get(PREFIX + "/packages/{package_id}/history", tags=["packages"])
    def history(package_id: Annotated[str, PathParam(max_length=100)], who: Who, why: Purpose) -> dict:
        """The package's validation results and PREMIS event history."""
        return holder.get().history(who, package_id, purpose=why)

    @app.get(PREFIX + "/receipts/{package_id}", tags=["receipts"])
    def receipt(package_id: Annotated[str, PathParam(max_length=100)], who: Who, why: Purpose) -> dict:
        """The kvittens: exactly the records verifiably stored, with checksums (409 when none can be issued)."""
        return holder.get().receipt(who, package_id, purpose=why)

    @app.get(PREFIX + "/access-log", tags=["access"])
    def access_log(who: Who, actor: Annotated[str | None, Query(max_length=200)] = None,
                   target: Annotated[str | None, Query(max_length=500)] = None,
                   action: Annotated[str | None, Query(max_length=40)] = None,
                   limit: Annotated[int, Query(ge=1, le=10_000)] = 200) -> dict:
        """The access log, newest first (archivists only)."""
        return {"entries": holder.get().access_log(who, actor=actor, target=target, action=action, limit=limit)}

    def archivist_only(who: Principal, action: str, target: str, why: str = "") -> None:
        if who.role != "archivist":
            accesslog.log(holder.get().cat, who, action, target, purpose=why, outcome="refused",
                          detail=f"role {who.role}")
            raise AccessDenied(f"role {who.role} does not decide quarantine cases; archivists do")

    @app.get(PREFIX + "/quarantine", tags=["decisions"])
    def quarantine_cases(who: Who, why: Purpose,
                         status: Literal["open", "approved", "rejected", "all"] = "open") -> dict:
        """Quarantine cases (archivists): what failed, as checks and counts (never record values), and who decided."""
        from transforms.quality import quarantine as review

        archivist_only(who, "quarantine", "quarantine cases", why)
        rows = review.cases(holder.get().cat, None if status == "all" else status)
        accesslog.log(holder.get().cat, who, "quarantine", "quarantine cases", purpose=why,
                      detail=f"{len(rows)} case(s), status {status}")
        return {"cases": [{"id": c.id, "system": c.system, "batch_id": c.batch_id, "kind": c.kind,
                           "reasons": json.loads(c.reasons), "status": c.status,
                           "created_at": c.created_at.isoformat(), "decided_by": c.decided_by,
                           "decided_by_id": c.decided_by_id,
                           "decided_at": c.decided_at.isoformat() if c.decided_at else None,
                           "justification": c.justification} for c in rows]}

    @app.post(PREFIX + "/quarantine/decisions", tags=["decisions"])
    def quarantine_decision(req: DecisionRequest, who: Who, why: Purpose) -> dict:
        """An archivist decides a quarantine case, in their own name (the signed-in person's identifier is kept)."""
        from transforms.catalogue import Person
        from transforms.quality import quarantine as review

        cat = holder.get().cat
        target = f"quarantine {req.case_id}"
        archivist_only(who, "decision", target, why)
        name = who.display_name or who.name
        ident = who.name if who.issuer else f"credential:{who.name}"
        person = Person(id=ident[:300], name=name[:200], roles=tuple(who.roles) or (who.role,))
        try:
            case = review.decide(cat, req.case_id, approve=req.decision == "approve", by=person,
                                 justification=req.justification, via="page")
        except review.DecisionRefused as exc:
            accesslog.log(cat, who, "decision", target, purpose=why, outcome="refused", detail=str(exc))
            raise _BadRequest(str(exc), status=403) from None
        except ValueError as exc:
            accesslog.log(cat, who, "decision", target, purpose=why, outcome="refused", detail=str(exc))
            raise _BadRequest(str(exc), status=409) from None
        accesslog.log(cat, who, "decision", target, purpose=why, detail=f"{case.status}: {req.justification}")
        return {"id": case.id, "status": case.status, "decided_by": name, "decided_by_id": ident}

    @app.post(PREFIX + "/exports", tags=["delivery"], response_class=StreamingResponse)
    def export(req: ExportRequest, who: Who):
        """An E-ARK DIP (TAR) of the selection, secret parts left out and listed in its withheld manifest."""
        tmp = Path(tempfile.mkdtemp(prefix="arkiv-dip-"))
        try:
            result = dip.export(holder.get(), who, records=req.records, q=req.q, system=req.system, purpose=req.purpose,
                                dest=tmp)
        except BaseException:
            _remove_tree(tmp)
            raise
        path = Path(result["path"])
        headers = {"Content-Length": str(path.stat().st_size), "X-Arkiv-DIP": result["package_id"],
                   "X-Arkiv-Withheld": str(len(result["withheld"])),
                   "Content-Disposition": content_disposition(path.name)}
        return StreamingResponse(_file_chunks(path), media_type="application/x-tar", headers=headers,
                                 background=BackgroundTask(_remove_tree, tmp))

    app.add_middleware(RequestGuard)
    # served by `arkiv api` the log configuration covers every path (serve); inside another server
    # (Airflow's) at least ours, wherever it is mounted (the plugin adds its prefix)
    install_request_log_filter((PREFIX, "/archive"))
    return app


class _BadRequest(Exception):
    """A request refused before it reaches the archive (HTTP 400 unless said otherwise)."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def _route_path(req: Request) -> str:
    """The request's path as it may be logged: no query string, numbers masked, control characters escaped."""
    return accesslog.clean(req.url.path, 300)


def _who_of(holder: "_Lazy", req: Request) -> Principal | None:
    try:
        return holder.principal(bearer_token(req.headers.get("authorization")),
                                req.headers.get("x-arkiv-system") or None)
    except Exception:  # noqa: BLE001 - an unknown caller is logged in the server log instead
        return None


def _refuse(holder: "_Lazy", req: Request, detail: str, who: Principal | None = None) -> None:
    """Log a refused request: in the access log when the caller's credential is valid, else the server log."""
    who = who or _who_of(holder, req)
    accesslog.refusal(holder.get().cat if who else None, who, "request", f"{req.method} {_route_path(req)}", detail)


class RequestGuard:
    """Refuses what the routes must never see, and turns unexpected errors into a bare 500.

    Before routing: a path with NUL or other control characters or invalid UTF-8 (decoded to U+FFFD),
    an overlong URL, a NUL in the query string, a body larger than :data:`MAX_BODY`. Afterwards: an
    exception no handler took is logged by its type only (its message may hold a value: an SQL
    statement, a file name) and answered ``500 internal error`` without a traceback.
    """

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        problem = self._problem(scope)
        if problem is not None:
            status, message = problem
            log.warning("refused request %s %s: %s", scope.get("method", "?"),
                        accesslog.clean(scope.get("path", ""), 300), message)
            _scrub_scope(scope)
            await _send_json(send, status, {"detail": message})
            return
        started = False
        received = 0

        async def counting_receive():
            nonlocal received
            msg = await receive()
            if msg["type"] == "http.request":
                received += len(msg.get("body", b""))
                if received > MAX_BODY:
                    raise _TooLarge
            return msg

        async def tracking_send(msg):
            nonlocal started
            if msg["type"] == "http.response.start":
                started = True
            await send(msg)

        try:
            try:
                await self.app(scope, counting_receive, tracking_send)
            except _TooLarge:
                log.warning("refused request %s %s: body larger than %d bytes", scope.get("method", "?"),
                            accesslog.clean(scope.get("path", ""), 300), MAX_BODY)
                if not started:
                    await _send_json(send, 413, {"detail": f"the request body is larger than {MAX_BODY} bytes"})
            except Exception as exc:  # noqa: BLE001 - the last guard: no traceback, no value in any output
                log.error("internal error (%s) answering %s %s", type(exc).__name__, scope.get("method", "?"),
                          accesslog.clean(scope.get("path", ""), 300))
                if not started:
                    await _send_json(send, 500, {"detail": "internal error; it is logged"})
        finally:
            _scrub_scope(scope)

    @staticmethod
    def _problem(scope) -> tuple[int, str] | None:
        path = scope.get("path", "")
        raw = scope.get("raw_path") or b""
        query = scope.get("query_string") or b""
        if len(raw) + len(query) > MAX_URL or len(path) > MAX_URL:
            return 414, f"the URL is longer than {MAX_URL} characters"
        if _PATH_CONTROL.search(path) or b"%00" in raw or b"\x00" in raw:
            return 400, "the path holds a control character, NUL or invalid UTF-8"
        try:
            from urllib.parse import unquote_to_bytes

            unquote_to_bytes(query).decode("utf-8")
        except UnicodeDecodeError:
            return 400, "the query string is not valid UTF-8"
        if b"%00" in query or b"\x00" in query:
            return 400, "the query string holds a NUL"
        for name, value in scope.get("headers") or []:
            if name == b"content-length":
                if not value.isdigit():
                    return 400, "invalid Content-Length"
                if int(value) > MAX_BODY:
                    return 413, f"the request body is larger than {MAX_BODY} bytes"
        return None


class _TooLarge(Exception):
    pass


class ScrubLoggedRequest:
    """ASGI middleware: once the app has answered, :func:`_scrub_scope` (for apps mounted in another server)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        try:
            await self.app(scope, receive, send)
        finally:
            if scope.get("type") == "http":
                _scrub_scope(scope)


def _scrub_scope(scope) -> None:
    """Leave nothing of the request's query string or a personnummer in its path for whoever logs it after us.

    A server that mounts this app logs from the same scope once the app is done (Airflow's API
    server logs ``path`` and ``query`` of every request from its own middleware), so the scope is
    cleaned in place when the answer has been sent.
    """
    scope["query_string"] = b""
    path = scope.get("path", "")
    shown = accesslog.clean(path, MAX_URL)
    if shown != path:
        scope["path"] = shown
        scope["raw_path"] = shown.encode("utf-8", "backslashreplace")


async def _send_json(send, status: int, body: dict) -> None:
    import json

    data = json.dumps(body).encode("utf-8")
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})


# --- the server's own request log ------------------------------------------------------------------------

class RedactQuery(logging.Filter):
    """Rewrites request-log records so that they hold no query string and no personnummer.

    Uvicorn's access log passes ``(client, method, path?query, http version, status)`` as the record's
    arguments; gunicorn passes a dict of atoms. For a path that is ours (all paths, or those under
    ``prefixes``) the query string is cut off; every path has numbers shaped like a personnummer masked
    and control characters escaped.
    """

    def __init__(self, prefixes: tuple[str, ...] = ()):
        super().__init__("arkiv-redact-query")
        self.prefixes = prefixes

    def _path(self, value: str) -> str:
        path, sep, _query = value.partition("?")
        ours = not self.prefixes or path.startswith(self.prefixes)
        keep = "" if ours or not sep else sep + _query
        return accesslog.clean(path, 2000) + (accesslog.clean(keep, 2000) if keep else "")

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple):
            record.args = tuple(self._path(a) if isinstance(a, str) and a.startswith("/") else a for a in args)
        elif isinstance(args, dict):
            record.args = {k: (self._path(v) if isinstance(v, str) and (k in ("U", "q") or v.startswith("/"))
                           else v) for k, v in args.items()}
            if isinstance(record.args.get("r"), str):
                method, _, rest = record.args["r"].partition(" ")
                target, _, version = rest.rpartition(" ")
                record.args["r"] = f"{method} {self._path(target)} {version}"
            if "q" in record.args and not self.prefixes:
                record.args["q"] = ""
        if isinstance(record.msg, str) and "?" in record.msg and not record.args:
            record.msg = " ".join(self._path(w) if w.startswith("/") else w for w in record.msg.split(" "))
        return True


REQUEST_LOGGERS = ("uvicorn.access", "gunicorn.access", "uvicorn.error")


def install_request_log_filter(prefixes: tuple[str, ...] = ()) -> None:
    """Put :class:`RedactQuery` on the request loggers of this process (once per logger)."""
    for name in REQUEST_LOGGERS:
        logger = logging.getLogger(name)
        mine = [f for f in logger.filters if isinstance(f, RedactQuery)]
        if not mine:
            logger.addFilter(RedactQuery(prefixes))
        elif not prefixes or any(not f.prefixes for f in mine):
            for f in mine:
                f.prefixes = ()
        else:
            for f in mine:
                f.prefixes = tuple(dict.fromkeys(f.prefixes + prefixes))


def log_config() -> dict:
    """Uvicorn's logging configuration with :class:`RedactQuery` on its access log's handler."""
    import copy

    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config.setdefault("filters", {})["redact_query"] = {"()": RedactQuery}
    for handler in config.get("handlers", {}).values():
        handler.setdefault("filters", []).append("redact_query")
    return config


def serve(app: FastAPI, host: str, port: int) -> None:  # pragma: no cover - exercised by `arkiv api`
    """Run ``app`` with uvicorn, its request log without query strings."""
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_config=log_config(), server_header=False)


class _Lazy:
    """The Archive, opened on the first request: importing or mounting the app touches no database."""

    def __init__(self, settings: Settings, archive: Archive | None, oidc: OidcConfig | None = None):
        self.settings, self.archive, self.lock = settings, archive, threading.Lock()
        self.oidc = oidc

    def principal(self, token: str, system: str | None = None) -> Principal:
        """The caller: a provider's token checked against the provider, else a catalogue credential."""
        return principal_for(self.get().cat, token, oidc=self.oidc, system=system)

    def discovery(self) -> dict:
        from transforms.access.oidc import validator

        return validator(self.oidc).discovery()

    def get(self) -> Archive:
        if self.archive is None:
            with self.lock:
                if self.archive is None:
                    self.archive = Archive(self.settings)
        return self.archive


def content_disposition(name: str, fallback: str = "document") -> str:
    """``attachment`` with a safe file name: no folders, no control characters, no quotes.

    ``filename`` is a plain-ASCII stand-in for old clients; ``filename*`` (RFC 6266/8187) carries the
    name in UTF-8, percent-encoded. A name from a record (``../../x``, ``a"b;\r\nX: y``) can neither
    break the header nor make a browser write outside its download folder.
    """
    import unicodedata
    from urllib.parse import quote

    base = re.split(r"[/\\]", name or "")[-1]
    base = "".join(c for c in base if unicodedata.category(c)[0] != "C").strip().lstrip(".").strip()
    base = base[:200] or fallback
    ascii_name = unicodedata.normalize("NFKD", base).encode("ascii", "ignore").decode("ascii")
    ascii_name = re.sub(r"[^A-Za-z0-9._ -]+", "_", ascii_name).strip(" ._") or fallback
    suffix = Path(base).suffix
    if suffix and not ascii_name.endswith(suffix) and suffix.isascii():
        ascii_name += suffix
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(base, safe='')}"


def _file_chunks(path: Path, chunk: int = 64 * 1024):
    with open(path, "rb") as f:
        while data := f.read(chunk):
            yield data


def _remove_tree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def main() -> None:  # pragma: no cover - exercised by `arkiv api`
    serve(create_app(), host=os.environ.get("ARKIV_API_HOST", "127.0.0.1"),
          port=int(os.environ.get("ARKIV_API_PORT", "8765")))


__all__ = ["RedactQuery", "ScrubLoggedRequest", "content_disposition", "create_app", "install_request_log_filter",
           "log_config", "serve"]
