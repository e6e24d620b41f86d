"""`/docs` and `/redoc`, with their scripts served by the daemon: they work with no internet.

FastAPI's own pages load Swagger UI and ReDoc from a CDN. The same files ship
in the `fastapi-offline` package; they are read from it once and served from
memory under `/docs/assets/`.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from fastapi import APIRouter, HTTPException, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse, Response

router = APIRouter(include_in_schema=False)

ASSETS_URL = "/docs/assets"
OPENAPI_URL = "/openapi.json"
OAUTH2_REDIRECT_URL = "/docs/oauth2-redirect"
TITLE = "runyard"

# name -> media type; the files fastapi-offline ships in its `static` folder.
_ASSETS = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "redoc.standalone.js": "text/javascript; charset=utf-8",
    "favicon.png": "image/png",
}
# Pinned package files: a day in caches is safe.
_ASSET_HEADERS = {"Cache-Control": "public, max-age=86400"}


@cache
def _asset(name: str) -> bytes:
    return resources.files("fastapi_offline").joinpath("static", name).read_bytes()


def _root(request: Request) -> str:
    root: str = request.scope.get("root_path", "")
    return root


@router.get("/docs")
async def swagger_ui(request: Request) -> HTMLResponse:
    """The Swagger UI page of the REST API."""
    root = _root(request)
    return get_swagger_ui_html(
        openapi_url=root + OPENAPI_URL,
        title=f"{TITLE} - Swagger UI",
        oauth2_redirect_url=root + OAUTH2_REDIRECT_URL,
        swagger_js_url=f"{root}{ASSETS_URL}/swagger-ui-bundle.js",
        swagger_css_url=f"{root}{ASSETS_URL}/swagger-ui.css",
        swagger_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
    )


@router.get(OAUTH2_REDIRECT_URL)
async def swagger_ui_redirect() -> HTMLResponse:
    """Part of Swagger UI."""
    return get_swagger_ui_oauth2_redirect_html()


@router.get("/redoc")
async def redoc(request: Request) -> HTMLResponse:
    """The ReDoc page of the REST API."""
    root = _root(request)
    return get_redoc_html(
        openapi_url=root + OPENAPI_URL,
        title=f"{TITLE} - ReDoc",
        redoc_js_url=f"{root}{ASSETS_URL}/redoc.standalone.js",
        redoc_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
        with_google_fonts=False,
    )


@router.get(ASSETS_URL + "/{file}")
async def asset(file: str) -> Response:
    """A script, style sheet or icon of the documentation pages."""
    media_type = _ASSETS.get(file)
    if media_type is None:
        raise HTTPException(404, f"No documentation asset named {file!r}.")
    return Response(_asset(file), media_type=media_type, headers=_ASSET_HEADERS)
