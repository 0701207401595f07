// createTypecase: one client per service, built from the generated service descriptors. Every RPC becomes a
// method named like the RPC in lowerCamelCase whose HTTP route comes from the descriptor's google.api.http option
// (route.ts): unary RPCs return a Promise of the response message, server streams an AsyncIterable of response
// messages (stream.ts), client streams take a file (transport/upload.ts).

import { create } from "@bufbuild/protobuf";
import type { DescMessage, DescService, MessageInitShape, MessageShape } from "@bufbuild/protobuf";
import type { GenService, GenServiceMethods } from "@bufbuild/protobuf/codegenv2";
import { registry } from "./codec.js";
import { TypecaseError } from "./errors.js";
import { serverStream } from "./stream.js";
import { AdminService } from "./gen/typecase/v1/admin_pb.js";
import { AssistantService } from "./gen/typecase/v1/assistant_pb.js";
import { AuthService } from "./gen/typecase/v1/auth_pb.js";
import { ChatService } from "./gen/typecase/v1/chat_pb.js";
import { FlowService } from "./gen/typecase/v1/flow_pb.js";
import { GroupService } from "./gen/typecase/v1/groups_pb.js";
import { KnowledgeService, UploadFileRequestSchema, UploadFileResponseSchema } from "./gen/typecase/v1/knowledge_pb.js";
import { LLMService } from "./gen/typecase/v1/llm_pb.js";
import { RoleService } from "./gen/typecase/v1/roles_pb.js";
import { ToolService } from "./gen/typecase/v1/tools_pb.js";
import { DEFAULT_RETRY, unary } from "./transport/http.js";
import type { CallOptions, RetryPolicy, Transport, WebSocketConstructor } from "./transport/http.js";
import { upload } from "./transport/upload.js";

export interface TypecaseOptions {
  /** Server URL, e.g. "http://127.0.0.1:8080"; "" (the default) is the page's own origin in a browser. */
  baseUrl?: string;
  /** An API key, sent as `authorization: Bearer <key>` (a token, when it has a value, is sent instead). */
  apiKey?: string;
  /** A JWT access token, or a function returning the current one (read on every request). */
  token?: string | (() => string | undefined);
  /** fetch to use (default: the global one). */
  fetch?: typeof globalThis.fetch;
  /** Headers added to every request. */
  headers?: Record<string, string>;
  /** Default deadline of unary calls and uploads in ms (default 30000; 0 for none). Streams take theirs per call. */
  timeoutMs?: number;
  /** Retries of GET calls and reconnects of resumable streams (defaults: DEFAULT_RETRY). */
  retry?: Partial<RetryPolicy>;
  /** WebSocket constructor for `via: "websocket"` where the runtime has no global one (Node 20). */
  WebSocket?: WebSocketConstructor;
}

/** Per-call options of uploads: CallOptions plus the upload request's other fields (file name, tags, ...). */
export interface UploadOptions<I extends DescMessage = typeof UploadFileRequestSchema> extends CallOptions {
  request?: MessageInitShape<I>;
}

type MethodFn<M> = M extends { methodKind: "unary"; input: infer I extends DescMessage; output: infer O extends DescMessage }
  ? (request?: MessageInitShape<I>, options?: CallOptions) => Promise<MessageShape<O>>
  : M extends { methodKind: "server_streaming"; input: infer I extends DescMessage; output: infer O extends DescMessage }
    ? (request?: MessageInitShape<I>, options?: CallOptions) => AsyncIterable<MessageShape<O>>
    : M extends { methodKind: "client_streaming"; input: infer I extends DescMessage; output: infer O extends DescMessage }
      ? (request: MessageInitShape<I>, file: Blob, options?: CallOptions) => Promise<MessageShape<O>>
      : never;

/** The client of a service: one method per RPC, named as the generated descriptor's method localName. */
export type ServiceClient<S> = S extends GenService<infer M extends GenServiceMethods>
  ? { [K in keyof M]: MethodFn<M[K]> }
  : never;

export type KnowledgeClient = Omit<ServiceClient<typeof KnowledgeService>, "uploadFile"> & {
  /** Uploads a file (multipart) into a knowledge base; resolves once it is stored and queued. */
  uploadFile(
    kbId: string,
    file: Blob,
    options?: UploadOptions,
  ): Promise<MessageShape<typeof UploadFileResponseSchema>>;
};

export interface TypecaseClient {
  auth: ServiceClient<typeof AuthService>;
  llm: ServiceClient<typeof LLMService>;
  chat: ServiceClient<typeof ChatService>;
  knowledge: KnowledgeClient;
  flow: ServiceClient<typeof FlowService>;
  admin: ServiceClient<typeof AdminService>;
  groups: ServiceClient<typeof GroupService>;
  roles: ServiceClient<typeof RoleService>;
  tools: ServiceClient<typeof ToolService>;
  assistants: ServiceClient<typeof AssistantService>;
}

/** Builds the client of any service with google.api.http options from its descriptor. */
export function createServiceClient<S extends DescService>(service: S, transport: Transport): ServiceClient<S> {
  const client: Record<string, unknown> = {};
  for (const method of service.methods) {
    switch (method.methodKind) {
      case "unary":
        client[method.localName] = (request?: unknown, options?: CallOptions) =>
          unary(transport, method, create(method.input, request as never), options ?? {});
        break;
      case "server_streaming":
        client[method.localName] = (request?: unknown, options?: CallOptions) =>
          serverStream(transport, method, create(method.input, request as never), options ?? {});
        break;
      case "client_streaming":
        client[method.localName] = (request: unknown, file: Blob, options?: CallOptions) =>
          upload(transport, method, create(method.input, request as never), file, options ?? {});
        break;
      default:
        client[method.localName] = () => {
          throw new TypecaseError("UNIMPLEMENTED", "bidirectional streams are not served over HTTP", { httpStatus: 0 });
        };
    }
  }
  return client as ServiceClient<S>;
}

export function createTypecase(options: TypecaseOptions = {}): TypecaseClient {
  const { token, apiKey } = options;
  const fetchImpl = options.fetch ?? globalThis.fetch?.bind(globalThis);
  const transport: Transport = {
    baseUrl: (options.baseUrl ?? "").replace(/\/+$/, ""),
    fetch: fetchImpl,
    credential: () => (typeof token === "function" ? token() : token) || apiKey || undefined,
    headers: Object.fromEntries(Object.entries(options.headers ?? {}).map(([k, v]) => [k.toLowerCase(), v])),
    timeoutMs: options.timeoutMs === 0 ? undefined : (options.timeoutMs ?? 30_000),
    retry: { ...DEFAULT_RETRY, ...options.retry },
    registry,
    WebSocket: options.WebSocket,
    // A caller's own fetch means they want requests to go through it: XMLHttpRequest only when none was given.
    useXhr: options.fetch === undefined && typeof XMLHttpRequest !== "undefined",
  };
  const knowledge = createServiceClient(KnowledgeService, transport);
  const uploadMethod = KnowledgeService.method.uploadFile;
  return {
    auth: createServiceClient(AuthService, transport),
    llm: createServiceClient(LLMService, transport),
    chat: createServiceClient(ChatService, transport),
    knowledge: {
      ...knowledge,
      uploadFile: (kbId: string, file: Blob, opts?: UploadOptions) =>
        upload(
          transport,
          uploadMethod,
          create(UploadFileRequestSchema, { ...opts?.request, kbId }),
          file,
          opts ?? {},
        ) as Promise<MessageShape<typeof UploadFileResponseSchema>>,
    },
    flow: createServiceClient(FlowService, transport),
    admin: createServiceClient(AdminService, transport),
    groups: createServiceClient(GroupService, transport),
    roles: createServiceClient(RoleService, transport),
    tools: createServiceClient(ToolService, transport),
    assistants: createServiceClient(AssistantService, transport),
  };
}
