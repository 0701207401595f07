"""A real Starlette service with an OpenAPI document whose operations are slow on request, and that counts what it
saw: `python -m tests.assistants.slow_service PORT`. GET /stats says how many calls of each operation started,
finished, and were closed by the client before their answer (a stopped turn must close its request)."""

from __future__ import annotations

import asyncio
import sys
from collections import Counter

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

STATS: Counter[str] = Counter()

DOCUMENT = {
    "openapi": "3.1.0",
    "info": {"title": "Slow", "version": "1"},
    "servers": [{"url": "/api"}],
    "paths": {
        "/wait": {
            "get": {
                "operationId": "wait",
                "summary": "Wait some seconds, then answer with a token (read-only, safe to repeat)",
                "parameters": [{"name": "seconds", "in": "query", "required": True, "schema": {"type": "number"}}],
            }
        },
        "/orders": {
            "post": {
                "operationId": "placeOrder",
                "summary": "Place an order (not idempotent); waits `seconds` first",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "properties": {"item": {"type": "string"}, "seconds": {"type": "number"}},
                                "required": ["item"],
                            }
                        }
                    },
                },
            }
        },
    },
}


async def document(request: Request):
    return JSONResponse(DOCUMENT)


async def slowly(request: Request, name: str, seconds: float, answer):
    """Wait, watching the connection: a client that goes away is counted as closed."""
    STATS[f"{name}.started"] += 1
    loop = asyncio.get_running_loop()
    until = loop.time() + seconds
    while loop.time() < until:
        if await request.is_disconnected():
            STATS[f"{name}.closed"] += 1
            return JSONResponse({}, status_code=499)
        await asyncio.sleep(min(0.05, max(0.0, until - loop.time())))
    STATS[f"{name}.finished"] += 1
    return JSONResponse(answer)


async def wait(request: Request):
    seconds = float(request.query_params.get("seconds", "0"))
    return await slowly(request, "wait", seconds, {"token": f"waited-{seconds}"})


async def orders(request: Request):
    body = await request.json()
    return await slowly(request, "order", float(body.get("seconds") or 0), {"order": body.get("item"), "number": 1})


async def stats(request: Request):
    return JSONResponse(dict(STATS))


app = Starlette(
    routes=[
        Route("/openapi.json", document),
        Route("/api/wait", wait),
        Route("/api/orders", orders, methods=["POST"]),
        Route("/stats", stats),
    ]
)

if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
