"""The public page and the API docs, served by the open-data API from local files (no CDN).

``/`` is a phone-readable page (Bahasa Indonesia / English) with the current ISPU per district
in the regulation's colours and its official category text, a station map drawn from the stations'
coordinates over city outlines (``public/outlines.geojson``: OpenStreetMap, ODbL, simplified by
``devtools/outlines.py``), drinking-water compliance and bins due for collection. It reads the API's own datasets and ``/v1/legend``
(bands, colours, advice and thresholds from kotacerdas/standards.py, so the page re-types none).
``/docs`` is Swagger UI 5 (OpenAPI 3.1, which FastAPI emits) from the assets the ``fastapi-offline``
package ships (``swagger-ui-bundle`` on PyPI still carries Swagger UI 4, which cannot render 3.1).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import fastapi_offline
from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles

from dashboards.model import TIMEZONE
from kotacerdas import standards

PAGE_DIR = Path(__file__).parent / "public"
SWAGGER_DIR = Path(fastapi_offline.__file__).parent / "static"


def legend() -> dict[str, Any]:
    return {
        "ispu": [{"level": b.level, "label": b.label, "label_en": b.label_en, "lower": b.lower, "color": b.hex,
                  "advice_id": b.advice_id, "advice_en": b.advice_en, "effect_id": b.effect_id,
                  "effect_en": b.effect_en} for b in standards.ISPU_BANDS],
        "ispu_source": standards.ISPU_REGULATION,
        "ispu_text_source": standards.ISPU_TEXT_SOURCE,
        "ispu_translation": standards.ISPU_TRANSLATION,
        "water_source": standards.WATER_REGULATION,
        "bin_fill_due": standards.BIN_FILL_DUE,
        "timezone": TIMEZONE,  # times on the page are the city's (WIB), not the viewer's device zone
    }


def mount(app: FastAPI) -> None:
    app.mount("/static/swagger", StaticFiles(directory=SWAGGER_DIR), name="swagger")
    app.mount("/static/public", StaticFiles(directory=PAGE_DIR), name="public")

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(PAGE_DIR / "index.html", media_type="text/html; charset=utf-8")

    @app.get("/v1/legend", tags=["catalogue"], summary="ISPU bands, colours and advice; water and bin thresholds")
    def get_legend() -> dict[str, Any]:
        return legend()

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url=app.openapi_url or "/openapi.json", title=f"{app.title} - API",
                                   swagger_js_url="/static/swagger/swagger-ui-bundle.js",
                                   swagger_css_url="/static/swagger/swagger-ui.css",
                                   swagger_favicon_url="/static/public/favicon.svg")
