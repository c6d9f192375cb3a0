"""The archivist's page inside Airflow: a FastAPI app the API server mounts at ``/arkiv``.

It sits behind Airflow's own authentication: the user is whoever Airflow's auth manager
says the session cookie (or a bearer token) belongs to, and a browser without a session is
sent to Airflow's login page. What a user may do follows Airflow's permissions on the
system's DAG: reading a case needs read access to that DAG, deciding needs edit access
(with the simple auth manager: role ``viewer`` reads, ``user`` and above decide).

Pages: ``/`` the quarantine cases, ``/case`` one case with its report and the decision form,
``/overview`` quality outcomes per month, ``/status`` the system owner's view of every interval the
schedule says is due (:mod:`transforms.status`, as ``arkiv status``).

The pages themselves are rendered by :mod:`transforms.quality.quarantine_page`; decisions go through
:func:`transforms.quality.quarantine.decide`, exactly as ``arkiv quarantine approve|reject`` does. A decision
asks for a ticked confirmation and a justification, and is recorded as the
signed-in Airflow user (:func:`decider`: identifier the username, name the full name when the auth
manager has one, archivist because Airflow lets them decide); the same decision can be made in
Airflow's *Required actions* (arkivflode_airflow/hitl.py) or with the CLI, and whichever comes first stands. A decision
is a state change made with the browser's session cookie, so it is checked against cross-site
request forgery: the form's signed token and the browser's Origin/Sec-Fetch-Site headers
(``review_web.csrf_valid``, ``review_web.same_origin``); a forged POST is refused with 403.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Annotated
from urllib.parse import quote

from fastapi import Depends, FastAPI, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse

log = logging.getLogger("arkivflode.ui")
BASE = "/arkiv"


class LoginRequired(Exception):
    def __init__(self, next_url: str):
        self.next_url = next_url


async def current_user(request: Request):
    """The Airflow user of this request, or a redirect to Airflow's login page."""
    from airflow.api_fastapi.core_api.security import get_user

    auth = request.headers.get("authorization", "")
    bearer = None
    if auth.lower().startswith("bearer "):
        from fastapi.security import HTTPAuthorizationCredentials

        bearer = HTTPAuthorizationCredentials(scheme="Bearer", credentials=auth.split(" ", 1)[1])
    try:
        return await get_user(request, None, bearer)
    except HTTPException:
        raise LoginRequired(str(request.url.path) + (f"?{request.url.query}" if request.url.query else "")) from None


User = Annotated[object, Depends(current_user)]


def _may(user, system: str, method: str) -> bool:
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import DagDetails

    return get_auth_manager().is_authorized_dag(method=method, details=DagDetails(id=system), user=user)


def _visible_systems(user) -> set[str]:
    from transforms.config.settings import Settings
    from transforms.config.systems import load_systems

    return {name for name in load_systems(Settings.from_env().systems_dir) if _may(user, name, "GET")}


def _catalogue():
    from transforms.config.settings import Settings
    from transforms.pipeline import catalogue

    return catalogue(Settings.from_env().ensure())


def _case(case_id: str, user, method: str = "GET"):
    from transforms.catalogue import QuarantineCase

    cat = _catalogue()
    with cat.session() as s:
        case = s.get(QuarantineCase, case_id)
    if case is None:
        raise HTTPException(404, f"no quarantine case {case_id}")
    if not _may(user, case.system, method):
        raise HTTPException(403, f"you may not {'decide on' if method != 'GET' else 'read'} cases of {case.system}")
    return cat, case


def _work_area():
    """The working area: where a quality report and its Data Docs are read when they are kept in the bucket."""
    from transforms.archive.workarea import work_area
    from transforms.config.settings import Settings

    return work_area(Settings.from_env())


def decider(user, may_decide: bool):
    """The Airflow user of a request as the person who decides (:func:`arkivflode_airflow.hitl.airflow_person`).

    The username is ``username`` where the auth manager's user has one (the FAB auth manager's user,
    whose ``get_id`` is a row number; the simple auth manager's), else ``get_name()``; the full name
    is the FAB user's first and last name.
    """
    from arkivflode_airflow.hitl import airflow_person

    username = getattr(user, "username", None) or user.get_name()
    full = " ".join(str(getattr(user, attr, "") or "").strip() for attr in ("first_name", "last_name")).strip()
    return airflow_person(str(username), full_name=full or None, may_decide=may_decide)


def _status_rows(system: str | None, visible: set[str]) -> list:
    from transforms import status as st
    from transforms.config.settings import Settings

    rows = st.status(Settings.from_env(), system) if system else [
        r for name in sorted(visible) for r in st.status(Settings.from_env(), name)]
    return [r for r in rows if r.system in visible]


def _csrf_key() -> bytes:
    from transforms.access.auth import secret_key
    from transforms.config.settings import Settings

    return secret_key(Settings.from_env().home, "csrf.key", "ARKIV_CSRF_KEY")


def create_app() -> FastAPI:
    app = FastAPI(title="Arkivflöde — archivist's page", description=__doc__, docs_url=None, redoc_url=None)
    from transforms.access.api import ScrubLoggedRequest

    # the API server logs each request's query string once the app is done; ours are left out of it
    app.add_middleware(ScrubLoggedRequest)

    @app.exception_handler(LoginRequired)
    async def _to_login(request: Request, exc: LoginRequired):
        from airflow.api_fastapi.app import get_auth_manager

        login = get_auth_manager().get_url_login()
        sep = "&" if "?" in login else "?"
        return RedirectResponse(f"{login}{sep}next={quote(exc.next_url, safe='')}", status_code=303)

    @app.get("/", response_class=HTMLResponse)
    def cases(user: User, system: str | None = None, status: str | None = None, kind: str | None = None,
              since: str | None = None) -> str:
        from transforms.quality.quarantine_page import CaseFilter, cases_page

        try:
            day = dt.date.fromisoformat(since) if since else None
        except ValueError:
            raise HTTPException(400, "since: a date as YYYY-MM-DD") from None
        f = CaseFilter(system or None, status or None, kind or None, day)
        return cases_page(_catalogue(), f, BASE, _visible_systems(user))

    @app.get("/api/cases")
    def cases_json(user: User, status: str | None = None) -> JSONResponse:
        from transforms.quality.quarantine_page import CaseFilter, list_cases

        visible = _visible_systems(user)
        return JSONResponse([
            {"id": c.id, "system": c.system, "kind": c.kind, "status": c.status, "opened": c.created_at.isoformat(),
             "decided_by": c.decided_by, "decided_at": c.decided_at.isoformat() if c.decided_at else None}
            for c in list_cases(_catalogue(), CaseFilter(status=status)) if c.system in visible])

    @app.get("/case", response_class=HTMLResponse)
    def case(user: User, id: str) -> str:  # noqa: A002 - the query parameter's name
        from transforms.quality.quarantine_page import case_page, csrf_token

        cat, c = _case(id, user)
        may_decide = _may(user, c.system, "PUT")
        token = csrf_token(_csrf_key(), user.get_name(), c.id) if may_decide else ""
        return case_page(cat, c, BASE, may_decide=may_decide, csrf=token, area=_work_area())

    @app.post("/case/decision")
    def decide(request: Request, user: User, id: Annotated[str, Form(max_length=200)],  # noqa: A002
               action: Annotated[str, Form(max_length=20)], reason: Annotated[str, Form(max_length=10_000)],
               csrf: Annotated[str, Form(max_length=200)] = "",
               confirm: Annotated[str, Form(max_length=10)] = "") -> RedirectResponse:
        from transforms.quality import quarantine as review
        from transforms.quality.quarantine_page import case_url, csrf_valid, same_origin

        host = request.headers.get("x-forwarded-host") or request.headers.get("host")
        if not same_origin(request.headers, host) or not csrf_valid(_csrf_key(), csrf, user.get_name(), id):
            log.warning("decision refused: cross-site request or missing/expired form token (user %s)",
                        user.get_name())
            raise HTTPException(403, "the decision form has expired or the request did not come from this page; "
                                     "open the case again and decide there")
        if action not in {"approve", "reject"}:
            raise HTTPException(400, "action: approve or reject")
        if confirm != "yes":
            raise HTTPException(400, "bekräfta beslutet (kryssrutan) / confirm the decision (the tick box): it cannot "
                                     "be changed afterwards")
        cat, c = _case(id, user, "PUT")  # 403 unless Airflow lets this user edit the system's DAG
        who = decider(user, may_decide=True)
        try:
            review.decide(cat, c.id, approve=action == "approve", by=who, justification=reason, via="page")
        except review.DecisionRefused as exc:
            raise HTTPException(403, str(exc)) from None
        except ValueError as exc:
            raise HTTPException(409, str(exc)) from None
        log.info("quarantine case %s %sd by %s through the archivist's page", c.id, action, who.id)
        return RedirectResponse(case_url(BASE, c.id), status_code=303)

    @app.get("/datadocs", response_class=HTMLResponse)
    def datadocs(user: User, id: str, page: str = "index.html") -> str:  # noqa: A002
        from transforms.quality.quarantine_page import data_docs_html

        _, c = _case(id, user)
        text = data_docs_html(c, page, BASE, _work_area())
        if text is None:
            raise HTTPException(404, "no such Data Docs page")
        return text

    @app.get("/status", response_class=HTMLResponse)
    def status_page(user: User, system: str | None = None) -> str:
        """The system owner's view: every interval the schedule says is due, with its state."""
        from transforms import status as st

        visible = sorted(_visible_systems(user))
        if system and system not in visible:
            raise HTTPException(404, f"no system {system} that you may read")
        rows = _status_rows(system or None, set(visible))
        return st.html_page(rows, BASE, visible, system or None)

    @app.get("/api/status")
    def status_json(user: User, system: str | None = None) -> JSONResponse:
        from dataclasses import asdict

        visible = _visible_systems(user)
        if system and system not in visible:
            raise HTTPException(404, f"no system {system} that you may read")
        return JSONResponse([asdict(r) for r in _status_rows(system or None, visible)])

    @app.get("/overview", response_class=HTMLResponse)
    def overview(user: User) -> str:
        from transforms.quality.quarantine_page import overview_page

        return overview_page(_catalogue(), BASE, _visible_systems(user))

    return app


app = create_app()
