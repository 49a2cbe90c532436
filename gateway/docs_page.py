"""Where the API describes itself: GET /openapi.json (gateway/openapi.py), GET /api/schemas/{form} and the
/docs page that renders the document.

The page's scripts and styles come from the installed `swagger-ui-py` package (Swagger UI 5, which reads
OpenAPI 3.1) and are served by the gateway itself under /docs/static: no CDN, so the page works offline. Each
answer is encoded once, when the app is created.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from .config import SCHEMAS_DIR, Settings
from .errors import NotFound, shorten
from .forms import Registry
from .openapi import build_document, schema_forms
from .responses import encode

DOCS_STATIC = "/docs/static"
# Swagger UI styles its widgets inline and shows its logo as a data: image; everything else is the gateway's.
DOCS_CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
            "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")


def swagger_ui_dir() -> Path:
    """Where the installed swagger-ui-py package keeps Swagger UI's built files. Found without importing the
    package, whose code (adapters for other web frameworks) the gateway does not use."""
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the swagger-ui-py package is not installed")
    return Path(spec.submodule_search_locations[0]) / "static"


def schema_file(form: Any) -> dict[str, Any]:
    """The form's JSON Schema exactly as its file in schemas/ has it."""
    name = getattr(form, "schema_name", None) or form.name
    with open(SCHEMAS_DIR / f"{name}.json", encoding="utf-8") as fh:
        result: dict[str, Any] = json.load(fh)
    return result


# --- the page ----------------------------------------------------------------------------------------------

DOCS_HTML = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>ERP sync gateway: API</title>
<link rel="stylesheet" href="{DOCS_STATIC}/swagger-ui.css">
<link rel="icon" type="image/png" href="{DOCS_STATIC}/favicon-32x32.png">
</head>
<body>
<div id="swagger-ui"></div>
<script src="{DOCS_STATIC}/swagger-ui-bundle.js"></script>
<script src="/docs/init.js"></script>
</body>
</html>
"""

# A file of its own rather than an inline script, so that the page's CSP allows scripts from 'self' only.
# No validator badge: Swagger UI would otherwise send the document to validator.swagger.io.
DOCS_INIT_JS = """window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  validatorUrl: null,
  presets: [SwaggerUIBundle.presets.apis],
  layout: "BaseLayout"
});
"""


# --- the routes --------------------------------------------------------------------------------------------

def routes(registry: Registry, settings: Settings) -> list[Route | Mount]:
    """GET /api/schemas/{form}, and unless GATEWAY_DOCS is off, /openapi.json, /docs and its assets: each
    answer encoded once, here."""
    files = {form.name: encode(schema_file(form)) for form in schema_forms(registry).values()}
    by_name = {name: files[form.name] for name, form in schema_forms(registry).items()}

    async def form_schema(request: Request) -> Response:
        name = request.path_params["form"]
        body = by_name.get(name.strip().lower())
        if body is None:
            raise NotFound(f"No form '{shorten(name)}' has a schema", forms=sorted(files))
        return Response(body, media_type="application/schema+json")

    served: list[Route | Mount] = [Route("/api/schemas/{form}", form_schema, methods=["GET"])]
    if not settings.docs:
        return served
    document = encode(build_document(registry, settings))

    async def openapi(request: Request) -> Response:
        return Response(document, media_type="application/json")

    async def docs(request: Request) -> Response:
        return HTMLResponse(DOCS_HTML, headers={"Content-Security-Policy": DOCS_CSP})

    async def docs_init(request: Request) -> Response:
        return Response(DOCS_INIT_JS, media_type="text/javascript")

    return [*served,
            Route("/openapi.json", openapi, methods=["GET"]),
            Route("/docs", docs, methods=["GET"]),
            Route("/docs/init.js", docs_init, methods=["GET"]),
            Mount(DOCS_STATIC, StaticFiles(directory=swagger_ui_dir()), name="docs-static")]
