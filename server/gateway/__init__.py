"""Typecase's HTTP gateway: gRPC services annotated with google.api.http served as JSON/REST, NDJSON,
SSE and WebSocket, with grpc-gateway's runtime semantics. It knows descriptors and grpc, never a domain.

    from typecase.server.gateway import InProcess, create_app

    in_process = InProcess(interceptors)            # the same interceptor instances as the grpc.aio server
    add_LibraryServiceServicer_to_server(servicer, in_process)
    app = create_app(in_process, [library_pb2.DESCRIPTOR.services_by_name["LibraryService"]],
                     routes=[Route("/healthz", healthz)], title="Typecase", version="1")

    # or in front of a remote server:
    app = create_app(grpc.aio.insecure_channel("host:50051"), services)

Conventions (details in the modules):

* pattern.py  - path templates and routing (literal > ``*`` > ``**``; verbs; AllExceptReserved unescaping)
* bindings.py - request = body, then path variables (the path wins over body values), then query
  parameters for fields bound by neither; ``response_body``; ``google.api.HttpBody`` raw both ways
* query.py    - query parameters / form fields (``a.b``, ``p=1&p=2``, ``m[k]=v``, WKTs, enums, bytes);
  ``access_token`` is reserved for authentication
* jsonmap.py  - proto3 JSON: proto field names out, every field emitted (unset messages as null),
  int64 as strings; proto or JSON names in, an unknown field a 400 naming it (and the closest known name)
* jsontext.py - JSON text in, within a nesting cap (400 beyond)
* errors.py   - google.rpc.Status bodies, grpc-gateway's code -> HTTP status table, rich details
* metadata.py - headers <-> metadata, Grpc-Timeout, trace ids, access_token / WebSocket bearer
* streaming.py, multipart.py - NDJSON / SSE / WebSocket server streams; multipart and NDJSON client streams
* inprocess.py, channel.py - the two targets
* openapi.py  - /openapi.json (OpenAPI 3.1) and the self-contained /docs page; openapi_examples.py - its
  example request bodies
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from google.protobuf.descriptor import ServiceDescriptor

from .app import Gateway, GatewayOptions
from .errors import HTTP_STATUS, RpcFailure
from .inprocess import InProcess, ServicerContext

__all__ = ["Gateway", "GatewayOptions", "HTTP_STATUS", "InProcess", "RpcFailure", "ServicerContext", "create_app"]


def create_app(target: Any, services: Sequence[ServiceDescriptor], **options: Any) -> Gateway:
    """Build the gateway ASGI app for ``services`` served by ``target``.

    ``target`` is a ``grpc.aio.Channel`` (remote) or an ``InProcess`` (servicers called directly).
    ``options`` are the fields of ``GatewayOptions``: max_body_bytes, max_upload_bytes,
    upload_chunk_bytes, max_form_field_bytes, max_part_header_bytes, max_json_depth, sse_keepalive_seconds,
    default_timeout, routes, lifespan,
    descriptor_set, title, version, openapi_path, docs_path, www_authenticate, reason_http_status,
    openapi_paths, security_schemes.
    Raises ValueError for an invalid google.api.http annotation, TypeError for an unknown option.
    """
    return Gateway(target, services, GatewayOptions(**options))
