// Errors of every call: google.rpc.Status (from an HTTP error body, an in-band stream error or a WebSocket
// error frame) mapped to one exception type, TypecaseError, whose `code` is the gRPC code name and whose
// `reason` is the ErrorInfo reason the server put in the details (an ErrorReason name without its
// ERROR_REASON_ prefix, e.g. "SESSION_DELETED"). Failures without a server answer get code UNAVAILABLE
// (network), CANCELLED (aborted by the caller) or DEADLINE_EXCEEDED (timeoutMs passed).

import { createRegistry, isMessage, toJson } from "@bufbuild/protobuf";
import { file_google_rpc_error_details } from "./gen/google/rpc/error_details_pb.js";
import { StatusSchema } from "./gen/google/rpc/status_pb.js";

/** gRPC status code names by number (google.rpc.Code). */
export const CODE_NAMES = [
  "OK",
  "CANCELLED",
  "UNKNOWN",
  "INVALID_ARGUMENT",
  "DEADLINE_EXCEEDED",
  "NOT_FOUND",
  "ALREADY_EXISTS",
  "PERMISSION_DENIED",
  "RESOURCE_EXHAUSTED",
  "FAILED_PRECONDITION",
  "ABORTED",
  "OUT_OF_RANGE",
  "UNIMPLEMENTED",
  "INTERNAL",
  "UNAVAILABLE",
  "DATA_LOSS",
  "UNAUTHENTICATED",
] as const;

export type Code = (typeof CODE_NAMES)[number];

// grpc-gateway's HTTPStatusFromCode, used for errors that arrive without an HTTP status of their own.
const HTTP_BY_CODE: Record<string, number> = {
  OK: 200, CANCELLED: 499, UNKNOWN: 500, INVALID_ARGUMENT: 400, DEADLINE_EXCEEDED: 504, NOT_FOUND: 404,
  ALREADY_EXISTS: 409, PERMISSION_DENIED: 403, RESOURCE_EXHAUSTED: 429, FAILED_PRECONDITION: 400, ABORTED: 409,
  OUT_OF_RANGE: 400, UNIMPLEMENTED: 501, INTERNAL: 500, UNAVAILABLE: 503, DATA_LOSS: 500, UNAUTHENTICATED: 401,
};

// For non-JSON error bodies (a proxy's HTML page, an empty 502): the code the HTTP status stands for.
const CODE_BY_HTTP: Record<number, Code> = {
  400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND", 409: "ABORTED",
  413: "RESOURCE_EXHAUSTED", 429: "RESOURCE_EXHAUSTED", 499: "CANCELLED", 501: "UNIMPLEMENTED", 502: "UNAVAILABLE",
  503: "UNAVAILABLE", 504: "UNAVAILABLE",
};

const detailTypes = createRegistry(file_google_rpc_error_details);
const ERROR_INFO = "type.googleapis.com/google.rpc.ErrorInfo";
const RETRY_INFO = "type.googleapis.com/google.rpc.RetryInfo";

export interface TypecaseErrorInit {
  httpStatus?: number;
  reason?: string;
  metadata?: Record<string, string>;
  retryAfterMs?: number;
  details?: unknown[];
  traceId?: string;
  cause?: unknown;
}

/** A failed Typecase call. Switch on `reason` when you know it, else on `code`. */
export class TypecaseError extends Error {
  /** gRPC status code name, e.g. "NOT_FOUND". */
  readonly code: string;
  /** HTTP status of the response (for in-band stream errors: the status the code maps to; 0: no response). */
  readonly httpStatus: number;
  /** google.rpc.ErrorInfo reason, e.g. "SESSION_DELETED". */
  readonly reason?: string;
  /** google.rpc.ErrorInfo metadata, e.g. { id: "01J..." }. */
  readonly metadata: Record<string, string>;
  /** google.rpc.RetryInfo delay (or the Retry-After header), in milliseconds. */
  readonly retryAfterMs?: number;
  /** Every status detail as JSON ({"@type": ..., ...}). */
  readonly details: unknown[];
  /** The server's trace id for the call (x-trace-id), when known. */
  readonly traceId?: string;

  constructor(code: string, message: string, init: TypecaseErrorInit = {}) {
    super(message, init.cause === undefined ? undefined : { cause: init.cause });
    this.name = "TypecaseError";
    this.code = code;
    this.httpStatus = init.httpStatus ?? HTTP_BY_CODE[code] ?? 500;
    this.reason = init.reason || undefined;
    this.metadata = init.metadata ?? {};
    this.retryAfterMs = init.retryAfterMs;
    this.details = init.details ?? [];
    this.traceId = init.traceId || undefined;
  }

  /** The error for a google.rpc.Status: its JSON form, or a Status message (e.g. a chat turn's `error` event). */
  static fromStatus(status: unknown, init: TypecaseErrorInit = {}): TypecaseError {
    if (isMessage(status, StatusSchema)) status = toJson(StatusSchema, status, { registry: detailTypes });
    const s = (status && typeof status === "object" ? status : {}) as Record<string, unknown>;
    const code = codeName(s.code);
    const details = Array.isArray(s.details) ? s.details : [];
    let reason: string | undefined;
    let metadata: Record<string, string> = {};
    let retryAfterMs = init.retryAfterMs;
    for (const d of details) {
      if (!d || typeof d !== "object") continue;
      const detail = d as Record<string, unknown>;
      if (detail["@type"] === ERROR_INFO && reason === undefined) {
        reason = typeof detail.reason === "string" ? detail.reason : undefined;
        if (detail.metadata && typeof detail.metadata === "object") {
          metadata = Object.fromEntries(
            Object.entries(detail.metadata as Record<string, unknown>).map(([k, v]) => [k, String(v)]),
          );
        }
      } else if (detail["@type"] === RETRY_INFO) {
        const ms = durationMs(detail.retryDelay ?? detail.retry_delay);
        if (ms !== undefined) retryAfterMs = ms;
      }
    }
    const message = typeof s.message === "string" && s.message ? s.message : code.toLowerCase().replace(/_/g, " ");
    return new TypecaseError(code, message, { ...init, reason, metadata, retryAfterMs, details });
  }
}

/** "NOT_FOUND" for 5 or "NOT_FOUND"; unknown values are "UNKNOWN". */
export function codeName(code: unknown): string {
  if (typeof code === "number") return CODE_NAMES[code] ?? "UNKNOWN";
  if (typeof code === "string" && (CODE_NAMES as readonly string[]).includes(code)) return code;
  return "UNKNOWN";
}

// Proto JSON Duration ("1.500s") in milliseconds.
function durationMs(value: unknown): number | undefined {
  if (typeof value !== "string") return undefined;
  const m = /^(-?\d+(?:\.\d+)?)s$/.exec(value.trim());
  return m ? Math.round(parseFloat(m[1]) * 1000) : undefined;
}

/** The error for a non-2xx HTTP response (its body is read here). */
export async function errorFromResponse(response: Response): Promise<TypecaseError> {
  const traceId = response.headers.get("x-trace-id") ?? undefined;
  const retryAfter = response.headers.get("retry-after");
  const retryAfterMs = retryAfter && /^\d+$/.test(retryAfter.trim()) ? Number(retryAfter) * 1000 : undefined;
  let text = "";
  try {
    text = await response.text();
  } catch {
    // the body broke off: the status line is all we have
  }
  return errorFromBody(response.status, text, { traceId, retryAfterMs });
}

/** The error for an HTTP status and its body text (Status JSON, or anything else a proxy may answer). */
export function errorFromBody(httpStatus: number, text: string, init: TypecaseErrorInit = {}): TypecaseError {
  try {
    const body: unknown = JSON.parse(text);
    if (body && typeof body === "object" && "code" in body) {
      return TypecaseError.fromStatus(body, { ...init, httpStatus });
    }
  } catch {
    // not JSON
  }
  const code = CODE_BY_HTTP[httpStatus] ?? (httpStatus >= 500 ? "INTERNAL" : "UNKNOWN");
  const message = text.trim().slice(0, 200) || `HTTP ${httpStatus}`;
  return new TypecaseError(code, message, { ...init, httpStatus });
}

/** A network failure (connection refused, reset, body cut off): retryable UNAVAILABLE. */
export function networkError(cause: unknown, what = "the connection failed"): TypecaseError {
  const detail = cause instanceof Error && cause.message ? `: ${cause.message}` : "";
  return new TypecaseError("UNAVAILABLE", `${what}${detail}`, { httpStatus: 0, cause });
}

export function cancelledError(cause?: unknown): TypecaseError {
  return new TypecaseError("CANCELLED", "the call was cancelled", { httpStatus: 0, cause });
}

export function deadlineError(timeoutMs: number): TypecaseError {
  return new TypecaseError("DEADLINE_EXCEEDED", `the call did not finish within ${timeoutMs} ms`, { httpStatus: 0 });
}
