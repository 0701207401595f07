// JSON values as google.protobuf.Struct / Value fields take them (structurally protobuf-es's JsonValue).
export type JsonValue = number | string | boolean | null | JsonValue[] | JsonObject;
export type JsonObject = { [key: string]: JsonValue };
