// JSON <-> protobuf-es messages for the gateway: requests are written with proto field names (the server's
// own output convention; it accepts both), responses are read leniently (fields or enum values added by a newer
// server are skipped). The registry resolves google.protobuf.Any, which carries google.rpc error details.

import { createRegistry, fromJson, toJson } from "@bufbuild/protobuf";
import type { DescMessage, JsonValue, MessageShape, Registry } from "@bufbuild/protobuf";
import { file_google_rpc_error_details } from "./gen/google/rpc/error_details_pb.js";
import { file_google_rpc_status } from "./gen/google/rpc/status_pb.js";
import { file_typecase_v1_admin } from "./gen/typecase/v1/admin_pb.js";
import { file_typecase_v1_assistant } from "./gen/typecase/v1/assistant_pb.js";
import { file_typecase_v1_auth } from "./gen/typecase/v1/auth_pb.js";
import { file_typecase_v1_chat } from "./gen/typecase/v1/chat_pb.js";
import { file_typecase_v1_common } from "./gen/typecase/v1/common_pb.js";
import { file_typecase_v1_flow } from "./gen/typecase/v1/flow_pb.js";
import { file_typecase_v1_knowledge } from "./gen/typecase/v1/knowledge_pb.js";
import { file_typecase_v1_llm } from "./gen/typecase/v1/llm_pb.js";
import { file_typecase_v1_tools } from "./gen/typecase/v1/tools_pb.js";
import { TypecaseError } from "./errors.js";

/** Every message type of the Typecase contracts and the google.rpc error details. */
export const registry: Registry = createRegistry(
  file_google_rpc_status,
  file_google_rpc_error_details,
  file_typecase_v1_common,
  file_typecase_v1_auth,
  file_typecase_v1_llm,
  file_typecase_v1_chat,
  file_typecase_v1_knowledge,
  file_typecase_v1_flow,
  file_typecase_v1_admin,
  file_typecase_v1_tools,
  file_typecase_v1_assistant,
);

/** A response message from its JSON (a decoding failure is the server's fault: INTERNAL). */
export function decode<Desc extends DescMessage>(schema: Desc, json: unknown): MessageShape<Desc> {
  try {
    return fromJson(schema, json as JsonValue, { ignoreUnknownFields: true, registry });
  } catch (e) {
    throw new TypecaseError("INTERNAL", `cannot read ${schema.typeName} from the response: ${String(e)}`, {
      httpStatus: 200,
      cause: e,
    });
  }
}

/** A message as proto3 JSON with proto field names (snake_case), as the server writes it. */
export function toJsonObject<Desc extends DescMessage>(schema: Desc, message: MessageShape<Desc>): JsonValue {
  return toJson(schema, message, { useProtoFieldName: true, registry });
}
