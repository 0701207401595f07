// @typecase/client: the Typecase API for browsers and Node over the HTTP gateway (JSON/REST, SSE, NDJSON,
// WebSocket), with message types generated from the contracts (importable as "@typecase/client/gen/...").

export { createTypecase, createServiceClient } from "./client.js";
export type { KnowledgeClient, ServiceClient, TypecaseClient, TypecaseOptions, UploadOptions } from "./client.js";
export { TypecaseError, CODE_NAMES, codeName } from "./errors.js";
export type { Code, TypecaseErrorInit } from "./errors.js";
export { DEFAULT_RETRY } from "./transport/http.js";
export type { CallOptions, RetryPolicy, WebSocketConstructor } from "./transport/http.js";
export { registry, toJsonObject } from "./codec.js";
export { routeOf } from "./route.js";
export type { Route } from "./route.js";
