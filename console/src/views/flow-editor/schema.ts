// What the editor knows about node types comes from FlowService.ListNodeTypes: the params' JSON Schema, default
// params, where outputs and branch handles live in the params. Nothing here names a node type's params.
import type { NodeTypeInfo } from "@typecase/client/gen/typecase/v1/flow_pb.js";
import type { JsonObject, JsonValue } from "../../json";

/** The part of JSON Schema the generated forms understand (plus the server's x-widget / x-order hints). */
export type Schema = {
  type?: string;
  title?: string;
  description?: string;
  enum?: JsonValue[];
  default?: JsonValue;
  minimum?: number;
  maximum?: number;
  pattern?: string;
  properties?: Record<string, Schema>;
  required?: string[];
  items?: Schema;
  additionalProperties?: Schema | boolean;
  "x-widget"?: string;
  "x-order"?: string[];
};

export function schemaOf(info: NodeTypeInfo): Schema {
  return (info.paramsSchema ?? {}) as unknown as Schema;
}

/** Strings at a dotted path: "cases.*.handle" (a key of every list item), "outputs.{}" (an object's keys). */
export function valuesAt(params: JsonValue | undefined, path: string): string[] {
  let current: JsonValue[] = params === undefined ? [] : [params];
  for (const part of path ? path.split(".") : []) {
    const next: JsonValue[] = [];
    for (const value of current) {
      if (part === "*" && Array.isArray(value)) next.push(...value);
      else if (part === "{}" && value && typeof value === "object" && !Array.isArray(value)) next.push(...Object.keys(value));
      else if (value && typeof value === "object" && !Array.isArray(value) && part in value) next.push(value[part]);
    }
    current = next;
  }
  const flat = current.flatMap((v) => (Array.isArray(v) ? v : [v]));
  return flat.filter((v) => typeof v === "string" || typeof v === "number").map(String).filter(Boolean);
}

/** The branch handles a node's edges may leave through; null when the node does not branch. */
export function branchHandles(info: NodeTypeInfo, params: JsonObject): string[] | null {
  if (!info.handlesFrom) return null;
  const named = valuesAt(params, info.handlesFrom);
  if (named.length === 0 && info.fixedHandles.length === 0) return null; // e.g. an output node without choices
  return [...new Set([...named, ...info.fixedHandles])];
}

/** Output keys `{{node_id.key}}` may read; "*" when any key may come out (code nodes). */
export function outputKeys(info: NodeTypeInfo, params: JsonObject): string[] {
  const keys = [...info.outputs, ...(info.outputsFrom ? valuesAt(params, info.outputsFrom) : [])];
  return info.dynamicOutputs ? [...keys, "*"] : [...new Set(keys)];
}

export function clone<T>(value: T): T {
  return value === undefined ? value : (JSON.parse(JSON.stringify(value)) as T);
}

/** A value at a path of keys and indexes. */
export function getAt(root: JsonValue | undefined, path: (string | number)[]): JsonValue | undefined {
  let cur: JsonValue | undefined = root;
  for (const key of path) {
    if (cur === null || typeof cur !== "object") return undefined;
    cur = (cur as Record<string, JsonValue>)[key as string];
  }
  return cur;
}

/** A copy of `root` with the value at `path` set (undefined removes it); missing containers are created. */
export function setAt(root: JsonObject, path: (string | number)[], value: JsonValue | undefined): JsonObject {
  const copy = clone(root);
  let cur: Record<string | number, JsonValue> = copy;
  path.forEach((key, i) => {
    if (i === path.length - 1) {
      if (value === undefined) {
        if (Array.isArray(cur)) cur.splice(key as number, 1);
        else delete cur[key];
      } else cur[key] = value;
      return;
    }
    if (cur[key] === undefined || cur[key] === null || typeof cur[key] !== "object") {
      cur[key] = typeof path[i + 1] === "number" ? [] : {};
    }
    cur = cur[key] as Record<string | number, JsonValue>;
  });
  return copy;
}

/** A new, empty value for a schema (what "Add" puts in a list). */
export function blank(schema: Schema | undefined): JsonValue {
  if (schema?.default !== undefined) return clone(schema.default);
  switch (schema?.type) {
    case "object": {
      const out: JsonObject = {};
      for (const key of schema.required ?? []) out[key] = blank(schema.properties?.[key]);
      return out;
    }
    case "array":
      return [];
    case "number":
    case "integer":
      return 0;
    case "boolean":
      return false;
    default:
      return "";
  }
}
