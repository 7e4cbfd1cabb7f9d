"""Settings the widget needs, and number normalisation for its dialpad."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import phonenumbers
from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel

from config import Config
from crm_store import InvalidPhone
from crm_store.phones import normalize_phone
from ws_gateway.exceptions import BadRequest

from ._services import Services, services
from .security import CurrentPrincipal

__all__ = ["router", "websocket_url"]

router = APIRouter(tags=["settings"])

#: A target of up to six digits is an extension (as in [outbound]).
_EXTENSION = re.compile(r"[0-9]{1,6}")
_ANY_ADDRESS = frozenset({"0.0.0.0", "::", ""})
_HOST = re.compile(r"(?P<name>[A-Za-z0-9.-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\])(?::[0-9]{1,5})?")


def websocket_url(request_host: str | None, cfg: Config) -> str:
    """The URL pages use for the websocket: ``[widget] websocket_url``, else the
    ``[websocket]`` port on the host the page was loaded from (or its address)."""
    if cfg.widget.websocket_url is not None:
        return cfg.widget.websocket_url
    ws = cfg.websocket
    scheme = "wss" if ws.tls_cert is not None else "ws"
    host = ws.host
    # The Host header's name (without its port): the name the browser used. It
    # is the client's text, and goes into a header: only a plain name is taken.
    found = _HOST.fullmatch(request_host or "")
    if found is not None:
        host = found.group("name")
    elif host in _ANY_ADDRESS:
        host = "127.0.0.1"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{scheme}://{host}:{ws.port}/"


class WidgetSettings(BaseModel):
    websocket_url: str
    region: str
    pause_reasons: list[str]
    dispositions: list[str]
    wrap_up: Literal["off", "optional", "required"]
    corner: Literal["bottom-right", "bottom-left"]
    language: str


@router.get("/api/settings/widget", summary="What the widget shows and where it connects")
async def widget_settings(
    request: Request,
    principal: CurrentPrincipal,
    svc: Annotated[Services, Depends(services)],
) -> WidgetSettings:
    cfg = svc.config()
    w = cfg.widget
    return WidgetSettings(
        websocket_url=websocket_url(request.headers.get("host"), cfg),
        region=cfg.site.default_region,
        pause_reasons=list(w.pause_reasons),
        dispositions=list(w.dispositions),
        wrap_up=w.wrap_up,
        corner=w.corner,
        language=w.language,
    )


@router.get(
    "/api/numbers/normalize",
    summary="A typed or pasted number in international form, or a colleague's extension",
    responses={400: {"description": "not a phone number"}},
)
async def normalize(
    principal: CurrentPrincipal,
    svc: Annotated[Services, Depends(services)],
    number: Annotated[str, Query(min_length=1, max_length=64)],
) -> dict[str, Any]:
    cfg = svc.config()
    text = number.strip()
    if _EXTENSION.fullmatch(text):
        agent = next((a.name for a in cfg.agents if a.extension == text), None)
        return {"kind": "extension", "extension": text, "agent": agent}
    try:
        e164 = normalize_phone(text, cfg.site.default_region)
    except InvalidPhone as exc:
        # The reason is the store's own words; the input is not echoed (it may be HTML).
        raise BadRequest(
            f"not a phone number: {exc.reason}", details={"reason": exc.reason}
        ) from None
    parsed = phonenumbers.parse(e164)
    display = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.INTERNATIONAL)
    return {"kind": "number", "e164": e164, "display": display}
