"""The agent's pages: log-in, the widget (full page and iframe panel), ``embed.js``,
the browser's catalogue and the htmx partials.

Pages need a browser session: without one they answer 303 to ``/login?next=...``.
Partials are fragments of the same data as the JSON API, rendered from the same
service functions (``search_contacts``, ``history_page``, ``call_detail``, the
cards), with the same rights; they take the API's principal, so a state change
needs the CSRF token (htmx sends it from the page's ``<meta name="csrf-token">``).
Every template is autoescaped; times go out as ISO 8601 in UTC in ``<time>``
elements the page shows in the browser's local time.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import quote, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import jinja2
import phonenumbers
from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from ws_gateway import Principal
from ws_gateway.exceptions import BadRequest

from . import sessions
from ._api_calls import call_detail, history_page, set_note
from ._api_contacts import client_card_of, lead_card_of, search_contacts
from ._services import Services, services
from .i18n import LANG_COOKIE, LANGUAGES, Catalogues, negotiate
from .security import CurrentPrincipal

__all__ = [
    "STATIC_DIR",
    "TEMPLATES_DIR",
    "Renderer",
    "VersionedStatic",
    "page_response",
    "router",
    "to_login",
]

STATIC_DIR = Path(__file__).parent / "static"
TEMPLATES_DIR = Path(__file__).parent / "templates"

router = APIRouter(include_in_schema=False)

Svc = Annotated[Services, Depends(services)]

_HISTORY_PAGE = 20


def static_version(root: Path = STATIC_DIR) -> str:
    """A digest of every static file: it changes whenever one of them does."""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


class VersionedStatic(StaticFiles):
    """Static files under ``/static/<version>/...``, cached for a year (the
    version changes with the content); without the current version, no-cache."""

    def __init__(self, *, directory: Path, version: str) -> None:
        super().__init__(directory=directory)
        self.version = version

    async def get_response(self, path: str, scope: Scope) -> Response:
        head, _, rest = path.partition("/")
        versioned = head == self.version and bool(rest)
        response = await super().get_response(rest if versioned else path, scope)
        if response.status_code in (200, 304):
            response.headers["Cache-Control"] = (
                "public, max-age=31536000, immutable" if versioned else "no-cache"
            )
        return response


class Renderer:
    """The templates in each language, with the static files' version."""

    def __init__(self, catalogues: Catalogues, version: str) -> None:
        self.catalogues = catalogues
        self.version = version
        self._envs: dict[str, jinja2.Environment] = {}
        for lang in LANGUAGES:
            env = jinja2.Environment(
                loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
                autoescape=True,
                extensions=["jinja2.ext.i18n"],
                undefined=jinja2.StrictUndefined,
            )
            env.install_gettext_translations(  # type: ignore[attr-defined]
                catalogues.get(lang), newstyle=True
            )
            env.filters["phone"] = display_phone
            env.globals["static"] = self.static
            env.globals["lang"] = lang
            env.globals["languages"] = LANGUAGES
            self._envs[lang] = env

    def static(self, path: str) -> str:
        return f"/static/{self.version}/{path}"

    def render(self, lang: str, name: str, **context: Any) -> str:
        return self._envs[lang].get_template(name).render(**context)


def display_phone(number: str | None) -> str:
    """An E.164 number in its international display form; anything else as it is."""
    if not number or not number.startswith("+"):
        return number or ""
    try:
        parsed = phonenumbers.parse(number)
    except phonenumbers.NumberParseException:
        return number
    return str(phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.INTERNATIONAL))


def _renderer(request: Request) -> Renderer:
    found: Renderer = request.app.state.renderer
    return found


Render = Annotated[Renderer, Depends(_renderer)]


def _lang(request: Request, svc: Services) -> str:
    return negotiate(request, svc.config().widget.language)


def page_response(
    request: Request, svc: Services, renderer: Renderer, name: str, **context: Any
) -> HTMLResponse:
    lang = _lang(request, svc)
    html = renderer.render(lang, name, **context)
    return HTMLResponse(html, headers={"Cache-Control": "no-store", "Content-Language": lang})


def _local_path(target: str | None) -> str | None:
    """``target`` if it is a path of this site (no scheme, host or ``//``)."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or any(c in target for c in "\r\n\t\\"):
        return None
    return target


def to_login(request: Request) -> RedirectResponse:
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/login?next={quote(here, safe='')}", status_code=303)


@router.get("/")
async def root() -> RedirectResponse:
    return RedirectResponse("/widget", status_code=303)


@router.get("/login", response_class=HTMLResponse)
async def login_page(
    request: Request,
    svc: Svc,
    renderer: Render,
    next: Annotated[str | None, Query(max_length=2000)] = None,
) -> HTMLResponse:
    return page_response(request, svc, renderer, "login.html", next=_local_path(next) or "/widget")


@router.get("/lang/{code}")
async def set_language(
    code: str, next: Annotated[str | None, Query(max_length=2000)] = None
) -> RedirectResponse:
    """Remember the language chosen on the page, and go back there."""
    if code not in LANGUAGES:
        raise BadRequest("not a language of the interface", details={"allowed": list(LANGUAGES)})
    response = RedirectResponse(_local_path(next) or "/widget", status_code=303)
    response.set_cookie(
        LANG_COOKIE, code, max_age=365 * 86400, path="/", samesite="lax", httponly=False
    )
    return response


async def _widget(request: Request, svc: Services, renderer: Renderer, layout: str) -> Response:
    found = await sessions.from_cookie(request, svc)
    if found is None:
        return to_login(request)
    cfg = svc.config()
    w = cfg.widget
    principal = found.principal
    return page_response(
        request,
        svc,
        renderer,
        "widget.html",
        layout=layout,
        csrf_token=found.csrf_token,
        user=principal,
        agents=sorted(principal.agents),
        pause_reasons=list(w.pause_reasons),
        dispositions=list(w.dispositions),
        wrap_up=w.wrap_up,
        corner=w.corner,
        here=request.url.path,
    )


@router.get("/widget")
async def widget(request: Request, svc: Svc, renderer: Render) -> Response:
    return await _widget(request, svc, renderer, "full")


@router.get("/widget/panel")
async def widget_panel(request: Request, svc: Svc, renderer: Render) -> Response:
    return await _widget(request, svc, renderer, "panel")


@router.get("/embed.js")
async def embed_js(svc: Svc, renderer: Render) -> Response:
    """The script a CRM page includes: a floating button opening the panel."""
    text = renderer.render(
        svc.config().widget.language, "embed.js", corner=svc.config().widget.corner
    )
    return Response(
        text,
        media_type="text/javascript",
        headers={"Cache-Control": "public, max-age=300"},
    )


@router.get("/i18n/{lang}.json")
async def browser_catalogue(lang: str, renderer: Render) -> JSONResponse:
    if lang not in LANGUAGES:
        raise BadRequest("not a language of the interface", details={"allowed": list(LANGUAGES)})
    return JSONResponse(
        renderer.catalogues.browser(lang), headers={"Cache-Control": "public, max-age=300"}
    )


@router.get("/api/docs", response_class=HTMLResponse)
async def api_docs(renderer: Render) -> HTMLResponse:
    """Swagger UI from the vendored files (nothing from a CDN)."""
    return get_swagger_ui_html(
        openapi_url="/api/openapi.json",
        title="Switchboard API",
        swagger_js_url=renderer.static("vendor/swagger-ui/swagger-ui-bundle.js"),
        swagger_css_url=renderer.static("vendor/swagger-ui/swagger-ui.css"),
        swagger_favicon_url=renderer.static("vendor/swagger-ui/favicon-32x32.png"),
    )


# --- htmx partials ------------------------------------------------------------


def _fragment(
    request: Request, svc: Services, renderer: Renderer, name: str, **context: Any
) -> HTMLResponse:
    lang = _lang(request, svc)
    return HTMLResponse(
        renderer.render(lang, name, **context),
        headers={"Cache-Control": "no-store", "Vary": "Cookie, Accept-Language"},
    )


@router.get("/partials/search", response_class=HTMLResponse)
async def search_partial(
    request: Request,
    principal: CurrentPrincipal,
    svc: Svc,
    renderer: Render,
    q: Annotated[str, Query(max_length=100)] = "",
) -> HTMLResponse:
    hits = await search_contacts(svc, principal, q, limit=20) if q.strip() else []
    return _fragment(request, svc, renderer, "partials/search.html", hits=hits, q=q.strip())


def _day_bounds(day: date, tz: str | None) -> tuple[datetime, datetime]:
    try:
        zone = ZoneInfo(tz) if tz else UTC
    except (ZoneInfoNotFoundError, ValueError):
        raise BadRequest("tz: not a time zone", details={"path": "tz"}) from None
    start = datetime(day.year, day.month, day.day, tzinfo=zone)
    return start.astimezone(UTC), (start + timedelta(days=1)).astimezone(UTC)


@router.get("/partials/history", response_class=HTMLResponse)
async def history_partial(
    request: Request,
    principal: CurrentPrincipal,
    svc: Svc,
    renderer: Render,
    direction: Literal["all", "inbound", "outbound", "internal"] = "all",
    missed: Annotated[str | None, Query(max_length=8)] = None,
    # The form sends an empty value when no day is chosen.
    day_text: Annotated[str, Query(alias="date", max_length=10)] = "",
    tz: Annotated[str | None, Query(max_length=64)] = None,
    before: Annotated[str | None, Query(max_length=200)] = None,
) -> HTMLResponse:
    since = until = None
    day: date | None = None
    if day_text:
        try:
            day = date.fromisoformat(day_text)
        except ValueError:
            raise BadRequest("date: not a day (YYYY-MM-DD)", details={"path": "date"}) from None
        since, until = _day_bounds(day, tz)
    page = await history_page(
        svc,
        principal,
        direction=None if direction == "all" else direction,
        missed=True if missed in ("on", "true", "1") else None,
        since=since,
        until=until,
        limit=_HISTORY_PAGE,
        before=before,
    )
    params: dict[str, str] = {"direction": direction}
    if missed in ("on", "true", "1"):
        params["missed"] = "on"
    if day is not None:
        params["date"] = day.isoformat()
    if tz:
        params["tz"] = tz
    return _fragment(
        request,
        svc,
        renderer,
        "partials/history.html",
        calls=page["calls"],
        next=page["next"],
        params=params,
        appended=before is not None,
    )


@router.get("/partials/calls/{call_id}", response_class=HTMLResponse)
async def call_partial(
    call_id: uuid.UUID, request: Request, principal: CurrentPrincipal, svc: Svc, renderer: Render
) -> HTMLResponse:
    call = await call_detail(svc, principal, call_id)
    return _fragment(request, svc, renderer, "partials/call_detail.html", call=call)


@router.post("/partials/calls/{call_id}/note", response_class=HTMLResponse)
async def call_note_partial(
    call_id: uuid.UUID,
    request: Request,
    principal: CurrentPrincipal,
    svc: Svc,
    renderer: Render,
    text: Annotated[str, Form()] = "",
) -> HTMLResponse:
    await set_note(svc, principal, call_id, text)
    call = await call_detail(svc, principal, call_id)
    return _fragment(request, svc, renderer, "partials/call_detail.html", call=call)


_CARDS: Mapping[str, Callable[[Services, Principal, uuid.UUID], Any]] = {
    "client": client_card_of,
    "lead": lead_card_of,
}


@router.get("/partials/contacts/{kind}/{contact_id}", response_class=HTMLResponse)
async def contact_partial(
    kind: Literal["client", "lead"],
    contact_id: uuid.UUID,
    request: Request,
    principal: CurrentPrincipal,
    svc: Svc,
    renderer: Render,
) -> HTMLResponse:
    card = await _CARDS[kind](svc, principal, contact_id)
    return _fragment(request, svc, renderer, "partials/contact_card.html", card=card)
