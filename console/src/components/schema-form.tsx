// A form generated from a tool's JSON Schema parameters (an object schema): one field per property, typed by
// the property's schema (string, number, integer, boolean, enum; objects and arrays as JSON text). Submitting
// yields the arguments object; the server validates it again (TOOL_ARGUMENTS_INVALID), so this form only has
// to be helpful, not authoritative.
import { useState } from "preact/hooks";
import type { JsonObject, JsonValue } from "../json";

type Schema = { [key: string]: JsonValue | undefined };
type Kind = "string" | "number" | "integer" | "boolean" | "enum" | "json";

export type SchemaField = { name: string; kind: Kind; required: boolean; description: string; options: JsonValue[]; schema: Schema };

function asSchema(value: JsonValue | undefined): Schema {
  return value && typeof value === "object" && !Array.isArray(value) ? (value as Schema) : {};
}

function kindOf(schema: Schema): Kind {
  if (Array.isArray(schema.enum)) return "enum";
  let type = schema.type;
  // ["string", "null"] and friends: the first non-null type decides.
  if (Array.isArray(type)) type = type.find((t) => t !== "null") ?? "string";
  if (type === undefined && Array.isArray(schema.anyOf)) return kindOf(asSchema(schema.anyOf.find((s) => asSchema(s).type !== "null")));
  if (type === "string" || type === "number" || type === "integer" || type === "boolean") return type;
  return type === undefined ? "string" : "json";
}

/** The fields of an object schema, required ones first (in the schema's order otherwise). */
export function schemaFields(parameters: JsonObject | undefined): SchemaField[] {
  const schema = asSchema(parameters);
  const props = asSchema(schema.properties);
  const required = new Set(Array.isArray(schema.required) ? schema.required.map(String) : []);
  const fields = Object.entries(props).map(([name, raw]) => {
    const s = asSchema(raw);
    return {
      name,
      kind: kindOf(s),
      required: required.has(name),
      description: String(s.description ?? s.title ?? ""),
      options: Array.isArray(s.enum) ? s.enum : [],
      schema: s,
    };
  });
  return [...fields.filter((f) => f.required), ...fields.filter((f) => !f.required)];
}

type Raw = Record<string, string | boolean>;

function initial(fields: SchemaField[]): Raw {
  const raw: Raw = {};
  for (const f of fields) {
    const d = f.schema.default;
    if (f.kind === "boolean") raw[f.name] = d === true;
    else if (d === undefined || d === null) raw[f.name] = "";
    else raw[f.name] = f.kind === "json" || f.kind === "enum" ? JSON.stringify(d) : String(d);
  }
  return raw;
}

/** The arguments object from the typed-in text, or the first problem (field and sentence). */
export function toArguments(fields: SchemaField[], raw: Raw): { args: JsonObject } | { field: string; problem: string } {
  const args: JsonObject = {};
  for (const f of fields) {
    const v = raw[f.name];
    if (f.kind === "boolean") {
      args[f.name] = v === true;
      continue;
    }
    const text = String(v ?? "").trim();
    if (text === "") {
      if (f.required && f.kind !== "string") return { field: f.name, problem: `${f.name} is required` };
      if (f.required) args[f.name] = "";
      continue;
    }
    if (f.kind === "number" || f.kind === "integer") {
      const n = Number(text);
      if (!Number.isFinite(n)) return { field: f.name, problem: `${f.name} must be a number` };
      if (f.kind === "integer" && !Number.isInteger(n)) return { field: f.name, problem: `${f.name} must be a whole number` };
      args[f.name] = n;
    } else if (f.kind === "enum") {
      args[f.name] = JSON.parse(text) as JsonValue; // option values are JSON-encoded
    } else if (f.kind === "json") {
      try {
        args[f.name] = JSON.parse(text) as JsonValue;
      } catch {
        return { field: f.name, problem: `${f.name} must be JSON (${String(f.schema.type ?? "object")})` };
      }
    } else {
      args[f.name] = String(v);
    }
  }
  return { args };
}

export function SchemaForm({
  parameters,
  busy,
  submitLabel = "Call",
  onSubmit,
}: {
  parameters: JsonObject | undefined;
  busy?: boolean;
  submitLabel?: string;
  onSubmit: (args: JsonObject) => void;
}) {
  const fields = schemaFields(parameters);
  const [raw, setRaw] = useState<Raw>(() => initial(fields));
  const [problem, setProblem] = useState<{ field: string; problem: string } | null>(null);
  const set = (name: string, value: string | boolean) => setRaw((r) => ({ ...r, [name]: value }));

  function submit(e: Event) {
    e.preventDefault();
    const out = toArguments(fields, raw);
    if ("problem" in out) return setProblem(out);
    setProblem(null);
    onSubmit(out.args);
  }

  return (
    <form class="param-form" onSubmit={submit} data-testid="tool-form">
      {fields.length === 0 && <p class="faint">This tool takes no arguments.</p>}
      {fields.map((f) => (
        <label key={f.name} class="field">
          <span class="field-label">
            <span class="mono">{f.name}</span>
            {f.required && <span class="required"> *</span>}
            <span class="faint"> {f.kind === "json" ? String(f.schema.type ?? "JSON") : f.kind}</span>
            {f.description && <span class="faint"> · {f.description}</span>}
          </span>
          <Input field={f} value={raw[f.name]} onChange={(v) => set(f.name, v)} />
          {problem?.field === f.name && <span class="field-problem">{problem.problem}</span>}
        </label>
      ))}
      <div>
        <button class="btn primary" type="submit" disabled={busy}>
          {busy ? "Calling…" : submitLabel}
        </button>
      </div>
    </form>
  );
}

function Input({ field: f, value, onChange }: { field: SchemaField; value: string | boolean | undefined; onChange: (v: string | boolean) => void }) {
  const name = `arg-${f.name}`;
  switch (f.kind) {
    case "boolean":
      return <input type="checkbox" name={name} checked={value === true} onChange={(e) => onChange(e.currentTarget.checked)} />;
    case "enum":
      return (
        <select name={name} value={String(value ?? "")} required={f.required} onChange={(e) => onChange(e.currentTarget.value)}>
          <option value="">{f.required ? "Choose…" : "(none)"}</option>
          {f.options.map((o) => (
            <option key={JSON.stringify(o)} value={JSON.stringify(o)}>
              {typeof o === "string" ? o : JSON.stringify(o)}
            </option>
          ))}
        </select>
      );
    case "number":
    case "integer":
      return (
        <input
          name={name}
          type="number"
          step={f.kind === "integer" ? 1 : "any"}
          min={typeof f.schema.minimum === "number" ? f.schema.minimum : undefined}
          max={typeof f.schema.maximum === "number" ? f.schema.maximum : undefined}
          required={f.required}
          value={String(value ?? "")}
          onInput={(e) => onChange(e.currentTarget.value)}
        />
      );
    case "json":
      return (
        <textarea
          name={name}
          class="mono"
          rows={3}
          placeholder={f.schema.type === "array" ? "[ … ]" : "{ … }"}
          value={String(value ?? "")}
          onInput={(e) => onChange(e.currentTarget.value)}
        />
      );
    default:
      return <input name={name} required={f.required} value={String(value ?? "")} onInput={(e) => onChange(e.currentTarget.value)} />;
  }
}
