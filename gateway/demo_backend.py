"""The small REST backend the bundled demo tree points at (service ``weather-api``).

``mcpgw serve`` with no source starts it alongside the gateway so a tool call
works end to end on a fresh machine.  Deterministic answers, an API key check
(the key comes from the demo tree's credential config), and a validation
error path so the error-template mapping can be seen too.
"""

from __future__ import annotations

import hashlib
from datetime import date, timedelta
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

DEMO_API_KEY = "demo-secret-key"

_CITIES = {
    "hangzhou": {"name": "Hangzhou", "country": "China", "population": 12_200_000},
    "lisbon": {"name": "Lisbon", "country": "Portugal", "population": 545_000},
    "san francisco": {"name": "San Francisco", "country": "United States", "population": 808_000},
}
_SUMMARIES = ("sunny", "partly cloudy", "light rain", "overcast", "windy")


def _authorised(request: Request) -> bool:
    return request.headers.get("x-api-key") == DEMO_API_KEY


def _denied() -> JSONResponse:
    return JSONResponse({"error": "missing or wrong X-API-Key"}, status_code=401)


def _forecast_day(city: str, offset: int) -> dict[str, Any]:
    seed = int(hashlib.sha256(f"{city.lower()}:{offset}".encode()).hexdigest(), 16)
    low = 5 + seed % 15
    return {
        "date": (date(2026, 1, 1) + timedelta(days=offset)).isoformat(),
        "summary": _SUMMARIES[seed % len(_SUMMARIES)],
        "low_c": low,
        "high_c": low + 3 + (seed >> 8) % 8,
    }


async def forecast(request: Request) -> JSONResponse:
    if not _authorised(request):
        return _denied()
    city = request.query_params.get("city", "")
    try:
        days = int(request.query_params.get("days", "3"))
    except ValueError:
        return JSONResponse({"error": "days must be an integer"}, status_code=400)
    if not city:
        return JSONResponse({"error": "city is required"}, status_code=400)
    return JSONResponse({"city": city, "days": [_forecast_day(city, i) for i in range(days)]})


async def city(request: Request) -> JSONResponse:
    if not _authorised(request):
        return _denied()
    found = _CITIES.get(request.path_params["name"].lower())
    if found is None:
        return JSONResponse({"error": f"unknown city {request.path_params['name']}"}, status_code=404)
    return JSONResponse(found)


async def observations(request: Request) -> JSONResponse:
    if not _authorised(request):
        return _denied()
    try:
        body = await request.json()
    except ValueError:
        return JSONResponse({"error": "body must be JSON"}, status_code=400)
    temperature = body.get("temperature") if isinstance(body, dict) else None
    if not isinstance(temperature, int | float) or not -90 <= temperature <= 60:
        return JSONResponse({"error": "temperature must be between -90 and 60 °C"}, status_code=422)
    return JSONResponse({"stored": True, "city": body.get("city"), "temperature": temperature})


def create_demo_backend() -> Starlette:
    return Starlette(
        routes=[
            Route("/forecast", forecast),
            Route("/cities/{name}", city),
            Route("/observations", observations, methods=["POST"]),
        ]
    )
