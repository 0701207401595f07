"""A real Starlette service with an API key and its OpenAPI 3.1 document, for the tools tests and bench:
`python -m tests.tools.openapi_service PORT KEY`. Every route but the document needs `X-API-Key: KEY`."""

from __future__ import annotations

import sys

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

KEY = sys.argv[2] if len(sys.argv) > 2 else "service-key"
PETS = {"1": {"id": "1", "name": "Rex", "tag": "dog"}}

DOCUMENT = {
    "openapi": "3.1.0",
    "info": {"title": "Pets", "version": "1"},
    "servers": [{"url": "/api"}],
    "components": {
        "schemas": {
            "NewPet": {
                "type": "object",
                "properties": {"name": {"type": "string"}, "tag": {"$ref": "#/components/schemas/Tag"}},
                "required": ["name"],
            },
            "Tag": {"type": "string", "enum": ["dog", "cat"]},
        },
        "parameters": {"Limit": {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1}}},
    },
    "paths": {
        "/pets": {
            "get": {
                "operationId": "listPets",
                "summary": "List pets",
                "parameters": [{"$ref": "#/components/parameters/Limit"}],
            },
            "post": {
                "operationId": "createPet",
                "summary": "Create a pet",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/NewPet"}}},
                },
            },
        },
        "/pets/{pet_id}": {
            "parameters": [{"name": "pet_id", "in": "path", "required": True, "schema": {"type": "string"}}],
            "get": {"operationId": "getPet", "summary": "One pet"},
        },
    },
}


def authorized(request: Request) -> bool:
    return request.headers.get("x-api-key") == KEY


async def document(request: Request):
    return JSONResponse(DOCUMENT)


async def pets(request: Request):
    if not authorized(request):
        return PlainTextResponse("bad api key", status_code=401)
    if request.method == "POST":
        body = await request.json()
        pet = {"id": str(len(PETS) + 1), **body}
        PETS[pet["id"]] = pet
        return JSONResponse(pet, status_code=201)
    limit = int(request.query_params.get("limit", "100"))
    return JSONResponse(list(PETS.values())[:limit])


async def pet(request: Request):
    if not authorized(request):
        return PlainTextResponse("bad api key", status_code=401)
    found = PETS.get(request.path_params["pet_id"])
    if request.path_params["pet_id"] == "echo-key":  # a careless service that repeats the caller's credential
        return JSONResponse({"error": f"key {request.headers['x-api-key']} may not read this"}, status_code=403)
    if found is None:
        return JSONResponse({"error": f"no pet {request.path_params['pet_id']}"}, status_code=404)
    return JSONResponse(found)


app = Starlette(
    routes=[
        Route("/openapi.json", document),
        Route("/api/pets", pets, methods=["GET", "POST"]),
        Route("/api/pets/{pet_id}", pet),
    ]
)

if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
