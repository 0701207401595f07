// HTTP mapping of an RPC, read from its google.api.http option in the generated descriptors (never written
// by hand): the path template's {field.path} variables are filled from the request, `body` says which part
// of the request travels as the JSON body ("*": all of it, a field name: that field, "": none), and every
// other populated field becomes a query parameter (GET, DELETE, or POST with a field body), as the server's
// gateway reads them (grpc-gateway's conventions: dotted paths, repeated keys, m[k] for maps).

import { getOption, hasOption, toJson, ScalarType } from "@bufbuild/protobuf";
import type { DescEnum, DescField, DescMessage, DescMethod, JsonObject, JsonValue, Message, Registry } from "@bufbuild/protobuf";
import { reflect, isReflectMessage } from "@bufbuild/protobuf/reflect";
import type { ReflectMessage } from "@bufbuild/protobuf/reflect";
import { base64Encode } from "@bufbuild/protobuf/wire";
import { http } from "./gen/google/api/annotations_pb.js";
import { TypecaseError } from "./errors.js";

interface PathVariable {
  /** The "{...}" text in the template. */
  text: string;
  /** Proto field names from the request message down to the bound field. */
  names: string[];
  /** Bound to more than one path segment ("{name=projects/*}", "{path=**}"): slashes stay unescaped. */
  multiSegment: boolean;
}

export interface Route {
  method: DescMethod;
  /** HTTP method: GET, POST, PATCH, PUT, DELETE (or a custom verb). */
  verb: string;
  template: string;
  variables: PathVariable[];
  /** "" (no body), "*" (the whole request) or the proto name of the field sent as body. */
  body: string;
  /** Proto name of the response field that is the whole HTTP response body, or "". */
  responseBody: string;
}

const routes = new WeakMap<DescMethod, Route>();

/** The HTTP mapping of a method; throws for methods without a google.api.http option. */
export function routeOf(method: DescMethod): Route {
  let route = routes.get(method);
  if (route === undefined) {
    route = parseRoute(method);
    routes.set(method, route);
  }
  return route;
}

function parseRoute(method: DescMethod): Route {
  if (!hasOption(method, http)) {
    throw new Error(`${method.parent.typeName}.${method.name} has no google.api.http option`);
  }
  const rule = getOption(method, http);
  const pattern = rule.pattern;
  let verb: string;
  let template: string;
  if (pattern.case === "custom") {
    verb = pattern.value.kind.toUpperCase();
    template = pattern.value.path;
  } else if (pattern.case !== undefined) {
    verb = pattern.case.toUpperCase();
    template = pattern.value;
  } else {
    throw new Error(`${method.parent.typeName}.${method.name}: HttpRule without a pattern`);
  }
  const variables: PathVariable[] = [];
  for (const m of template.matchAll(/\{([^}=]+)(?:=([^}]*))?\}/g)) {
    const segments = m[2];
    variables.push({
      text: m[0],
      names: m[1].trim().split("."),
      multiSegment: segments !== undefined && (segments.includes("/") || segments.includes("**")),
    });
  }
  return { method, verb, template, variables, body: rule.body, responseBody: rule.responseBody };
}

export interface HttpRequestParts {
  verb: string;
  /** Path with variables filled and the query string, relative to the base URL. */
  path: string;
  /** JSON body, or undefined for none. */
  body?: JsonValue;
}

/** Path, query and body for a request message. */
export function buildRequest(route: Route, request: Message, registry: Registry): HttpRequestParts {
  const input = route.method.input;
  let path = route.template;
  const bound = new Set<string>();
  for (const v of route.variables) {
    const { field, value } = valueAt(input, request, v.names);
    const text = value === undefined ? "" : scalarText(field, value);
    if (text === "") {
      throw new TypecaseError("INVALID_ARGUMENT", `${v.names.join(".")} is required (it is part of the URL path)`, {
        httpStatus: 0,
      });
    }
    const encoded = v.multiSegment ? text.split("/").map(encodeURIComponent).join("/") : encodeURIComponent(text);
    path = path.replace(v.text, encoded);
    bound.add(v.names.join("."));
  }
  let body: JsonValue | undefined;
  if (route.body === "*") {
    const json = toJson(input, request, { useProtoFieldName: true, registry }) as JsonObject;
    for (const name of bound) delete json[name]; // top-level path fields are in the URL already
    body = json;
  } else if (route.body !== "") {
    const json = toJson(input, request, { useProtoFieldName: true, registry }) as JsonObject;
    const field = input.fields.find((f) => f.name === route.body);
    body = json[route.body] ?? (field?.fieldKind === "list" ? [] : field?.fieldKind === "message" ? {} : null);
    if (body === null) {
      body = (toJson(input, request, { useProtoFieldName: true, alwaysEmitImplicit: true, registry }) as JsonObject)[
        route.body
      ];
    }
  }
  if (route.body !== "*") {
    const skip = new Set(bound);
    if (route.body !== "") skip.add(route.body);
    const params = formFields(input, request, skip, registry);
    if (params.length > 0) {
      path += (path.includes("?") ? "&" : "?") + new URLSearchParams(params).toString();
    }
  }
  return { verb: route.verb, path, body };
}

/** The (field, value) at a proto-name path; value is undefined when a message on the way is unset. */
function valueAt(desc: DescMessage, message: Message, names: string[]): { field: DescField; value: unknown } {
  let r: ReflectMessage = reflect(desc, message, false);
  for (let i = 0; ; i++) {
    const field = r.desc.fields.find((f) => f.name === names[i] || f.jsonName === names[i]);
    if (field === undefined) throw new Error(`${r.desc.typeName} has no field ${names[i]}`);
    if (i === names.length - 1) return { field, value: r.isSet(field) ? r.get(field) : undefined };
    if (field.fieldKind !== "message" || !r.isSet(field)) return { field, value: undefined };
    r = r.get(field) as ReflectMessage;
  }
}

/**
 * The populated fields of a message as text pairs (query parameters, multipart form fields), skipping the
 * proto-name paths in `skip` and everything below them.
 */
export function formFields(
  desc: DescMessage,
  message: Message,
  skip: ReadonlySet<string>,
  registry: Registry,
): [string, string][] {
  const out: [string, string][] = [];
  flatten(reflect(desc, message, false), "", skip, out, registry);
  return out;
}

function flatten(r: ReflectMessage, prefix: string, skip: ReadonlySet<string>, out: [string, string][], registry: Registry): void {
  for (const field of r.fields) {
    const path = prefix + field.name;
    if (skip.has(path) || !r.isSet(field)) continue;
    const value: unknown = r.get(field);
    switch (field.fieldKind) {
      case "scalar":
      case "enum":
        out.push([path, scalarText(field, value)]);
        break;
      case "message": {
        const m = value as ReflectMessage;
        if (isWellKnown(m.desc)) out.push([path, wellKnownText(m, registry)]);
        else flatten(m, path + ".", skip, out, registry);
        break;
      }
      case "list":
        for (const item of value as Iterable<unknown>) {
          out.push([path, isReflectMessage(item) ? wellKnownText(item, registry) : scalarText(field, item)]);
        }
        break;
      case "map":
        for (const [key, item] of value as ReadonlyMap<unknown, unknown>) {
          out.push([`${path}[${String(key)}]`, isReflectMessage(item) ? wellKnownText(item, registry) : scalarText(field, item)]);
        }
        break;
    }
  }
}

function isWellKnown(desc: DescMessage): boolean {
  return desc.typeName.startsWith("google.protobuf.");
}

// Well-known types as the gateway reads them from text: RFC 3339 timestamps, "3.5s" durations, wrappers as their
// value, FieldMask as the paths given (the server resolves them; JSON would camel-case them), Struct/Value as JSON.
function wellKnownText(m: ReflectMessage, registry: Registry): string {
  if (m.desc.typeName === "google.protobuf.FieldMask") {
    return ((m.message as unknown as { paths: string[] }).paths ?? []).join(",");
  }
  const json = toJson(m.desc, m.message, { registry });
  return typeof json === "string" ? json : JSON.stringify(json);
}

/** A scalar or enum value (of a field, list item or map value) as text: enums by name, bytes as base64. */
export function scalarText(field: DescField, value: unknown): string {
  const enumDesc: DescEnum | undefined = field.enum;
  if (enumDesc !== undefined && typeof value === "number") {
    return enumDesc.values.find((v) => v.number === value)?.name ?? String(value);
  }
  if (field.scalar === ScalarType.BYTES && value instanceof Uint8Array) return base64Encode(value);
  return String(value);
}
