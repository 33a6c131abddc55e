"""The web console at /console, served by the API itself.

One static page (static/index.html, console.js, console.css) with no build step and no CDN, so it
works with no internet access. It calls the same JSON API as every client, with the key the user
types kept in the tab's session storage: what a tenant's key may not read through the API, the
console cannot show. The page itself and its assets are open (they hold no data); the page's
Content-Security-Policy allows only its own scripts, so no text a tenant taught can run as code.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).resolve().parent / "static"
PAGE_PATH = "/console"
STATIC_PATH = "/console/static"
_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                               "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}

router = APIRouter(include_in_schema=False)


@router.get(PAGE_PATH)
def console_page() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html", headers=_HEADERS)


@router.get("/")
def root() -> RedirectResponse:
    """A browser pointed at the service lands on the console."""
    return RedirectResponse(PAGE_PATH)


def install_console(app: FastAPI) -> None:
    app.include_router(router)
    app.mount(STATIC_PATH, StaticFiles(directory=STATIC_DIR), name="console-static")


def is_console_path(path: str) -> bool:
    """Paths that hold no data and need no key: the page, its assets and the redirect to it."""
    return path in (PAGE_PATH, "/") or path.startswith(STATIC_PATH + "/")
