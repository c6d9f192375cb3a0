"""The archive API (HTTP, JSON, OpenAPI at ``/openapi.json``): :func:`create_app` builds it.

Served on its own (``arkiv api``, uvicorn) or mounted by the Airflow plugin. Every request carries
``Authorization: Bearer <token>`` (a credential from ``arkiv access-token add``) and may say why
(``X-Purpose`` header, percent-encoded UTF-8, or ``purpose`` parameter), which goes into the access log.

Stable deep links (they survive the move from mellanarkiv to slutarkiv)::

    /api/v1/records/{system}/{source_id}                            the record (e.g. /api/v1/records/lex/27)
    /api/v1/records/{system}/{source_id}/documents/{document_id}    one document's content
"""


import os
import re
import tempfile
import threading
from pathlib import Path
from typing import Annotated

from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from pydantic import BaseModel, Field
from starlette.background import BackgroundTask

from .. import __version__
from ..config import Settings
from ..errors import ContentError
from . import dip, receipts
from .auth import AccessDenied, NotFound, Principal, Withheld, authenticate
from .page import PAGE
from .service import Archive

PREFIX = "/api/v1"


class ExportRequest(BaseModel):
    """A selection for a DIP: record deep links (``system/source_id``) and/or a search."""

    records: list[str] = Field(default_factory=list, description="records as 'system/source_id'")
    q: str | None = Field(default=None, description="a search whose hits are added to the selection")
    system: str | None = None
    purpose: str = Field(description="why the records are handed out (the request, its diarienummer)")


def create_app(settings: Settings | None = None, *, archive: Archive | None = None) -> FastAPI:
    """The FastAPI app for ``settings`` (from the environment when None)."""
    settings = settings or Settings.from_env()
    holder = _Lazy(settings, archive)
    app = FastAPI(title="Arkivflöde archive API", version=__version__,
                  description="Search and read the mellanarkiv and slutarkiv, fetch receipts (kvittenser) and "
                              "request deliveries (E-ARK DIP). Every read is written to the access log.")
    app.state.archive = holder

    @app.exception_handler(NotFound)
    async def _not_found(_req: Request, exc: NotFound):
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(AccessDenied)
    async def _denied(_req: Request, exc: AccessDenied):
        return JSONResponse({"detail": str(exc)}, status_code=403)

    @app.exception_handler(Withheld)
    async def _withheld(_req: Request, exc: Withheld):
        return JSONResponse({"detail": str(exc), "classified": True, "secrecy_reference": exc.regulation},
                            status_code=403)

    @app.exception_handler(ContentError)
    async def _content(_req: Request, exc: ContentError):
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.exception_handler(receipts.ReceiptRefused)
    async def _refused(_req: Request, exc: receipts.ReceiptRefused):
        return JSONResponse({"detail": str(exc), "receipt": None}, status_code=409)

    def principal(authorization: Annotated[str | None, Header()] = None) -> Principal:
        token = authorization.removeprefix("Bearer ").strip() if authorization else None
        return authenticate(holder.get().cat, token)

    def purpose_of(x_purpose: Annotated[str | None, Header()] = None,
                   purpose: Annotated[str | None, Query(description="why (logged)")] = None) -> str:
        from urllib.parse import unquote

        # HTTP headers are ASCII: a purpose in Swedish is sent percent-encoded (UTF-8) and decoded here
        return (purpose or unquote(x_purpose or ""))[:1000]

    Who = Annotated[Principal, Depends(principal)]
    Purpose = Annotated[str, Depends(purpose_of)]

    @app.get("/archive", response_class=HTMLResponse, include_in_schema=False)
    def archive_page() -> str:
        """The archivist's page: search, record view with documents and history, access log."""
        return PAGE

    @app.get(f"{PREFIX}/whoami", tags=["access"])
    def whoami(who: Who) -> dict:
        """The credential's name, role, scope and clearance."""
        return {"name": who.name, "role": who.role, "system": who.system, "cleared": who.sees_secret}

    @app.get(f"{PREFIX}/search", tags=["search"])
    def search(who: Who, why: Purpose, q: str = "", system: str | None = None, record_class: str | None = None,
               closed_from: str | None = None, closed_to: str | None = None, storage: str | None = None,
               personnummer: str | None = None, limit: Annotated[int, Query(ge=1, le=500)] = 20,
               offset: Annotated[int, Query(ge=0)] = 0) -> dict:
        """Search by diarienummer, title, dates, record class, system, archive creator, series, party names;
        personnummer only for archivists and system owners, exact match. Hits never show personnummer or parties."""
        r = holder.get().search(who, q, purpose=why, system=system, record_class=record_class, closed_from=closed_from,
                       closed_to=closed_to, storage=storage, personnummer=personnummer, limit=limit, offset=offset)
        return {"total": r.total, "hits": r.hits}

    @app.get(PREFIX + "/records/{system}/{source_id}", tags=["records"])
    def record(system: str, source_id: str, who: Who, why: Purpose) -> dict:
        """A record with its metadata and document list; ``storage`` says mellanarkiv, slutarkiv or disposed."""
        return holder.get().record(who, system, source_id, purpose=why)

    @app.get(PREFIX + "/records/{system}/{source_id}/documents/{document_id}", tags=["records"],
             response_class=StreamingResponse)
    def document(system: str, source_id: str, document_id: str, who: Who, why: Purpose):
        """The document's bytes, streamed out of the stored package (never unpacked, never read whole)."""
        d = holder.get().document(who, system, source_id, document_id, purpose=why)
        headers = {"Content-Length": str(d.size), "X-Arkiv-Storage": d.storage,
                   "Content-Disposition": content_disposition(d.name)}
        if d.sha256:
            headers["X-Checksum-SHA256"] = d.sha256
        return StreamingResponse(d.chunks, media_type=d.mimetype, headers=headers)

    @app.get(PREFIX + "/packages", tags=["packages"])
    def packages(who: Who, system: str | None = None) -> dict:
        """Packages (the caller's own system's for business-system credentials), each with its receipt link."""
        return {"packages": holder.get().packages(who, system)}

    @app.get(PREFIX + "/packages/{package_id}/history", tags=["packages"])
    def history(package_id: str, who: Who, why: Purpose) -> dict:
        """The package's validation results and PREMIS event history."""
        return holder.get().history(who, package_id, purpose=why)

    @app.get(PREFIX + "/receipts/{package_id}", tags=["receipts"])
    def receipt(package_id: str, who: Who, why: Purpose) -> dict:
        """The kvittens: exactly the records verifiably stored, with checksums (409 when none can be issued)."""
        return holder.get().receipt(who, package_id, purpose=why)

    @app.get(PREFIX + "/access-log", tags=["access"])
    def access_log(who: Who, actor: str | None = None, target: str | None = None, action: str | None = None,
                   limit: Annotated[int, Query(ge=1, le=10_000)] = 200) -> dict:
        """The access log, newest first (archivists only)."""
        return {"entries": holder.get().access_log(who, actor=actor, target=target, action=action, limit=limit)}

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

    return app


class _Lazy:
    """The Archive, opened on the first request: importing or mounting the app touches no database."""

    def __init__(self, settings: Settings, archive: Archive | None):
        self.settings, self.archive, self.lock = settings, archive, threading.Lock()

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
    import uvicorn

    uvicorn.run(create_app(), host=os.environ.get("ARKIV_API_HOST", "127.0.0.1"),
                port=int(os.environ.get("ARKIV_API_PORT", "8765")))


__all__ = ["content_disposition", "create_app"]
