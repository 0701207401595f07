// A node's settings as a form generated from its params JSON Schema (FlowService.ListNodeTypes).
//
// Each control's name is `param-<dotted path>` (e.g. param-cases.0.conditions.0.right), the same path
// ValidateFlow reports in ValidationProblem.param, so a problem is shown under the control it is about.
// Template fields offer the upstream nodes' outputs as {{node.key}} variables.
import type { JsonObject, JsonValue } from "../../json";
import { blank, getAt, type Schema } from "./schema";

export type Choice = { value: string; label: string };
export type FormContext = {
  variables: string[]; // "{{node.key}}" references available upstream
  models: Choice[];
  knowledgeBases: Choice[];
  nodes: Choice[];
  problems: Map<string, string[]>; // by param path
};
type Path = (string | number)[];
type Change = (path: Path, value: JsonValue | undefined) => void;

const dotted = (path: Path) => path.join(".");

function ordered(schema: Schema): [string, Schema][] {
  const props = schema.properties ?? {};
  const order = schema["x-order"] ?? Object.keys(props);
  return order.filter((k) => k in props).map((k) => [k, props[k]!]);
}

export function ParamForm({ schema, params, onChange, ctx }: { schema: Schema; params: JsonObject; onChange: Change; ctx: FormContext }) {
  if (!schema.properties || Object.keys(schema.properties).length === 0) {
    // A node type the server does not describe yet: its params as one JSON object.
    return (
      <label class="field">
        <span class="field-label">Params (JSON)</span>
        <JsonField
          id="param-json"
          value={params}
          onChange={(v) => {
            if (v && typeof v === "object" && !Array.isArray(v)) for (const key of new Set([...Object.keys(params), ...Object.keys(v)])) onChange([key], v[key]);
          }}
        />
        <Problems path={[]} ctx={ctx} />
      </label>
    );
  }
  return (
    <div class="param-form">
      {ordered(schema).map(([key, prop]) => (
        <Field key={key} name={key} schema={prop} value={params[key]} path={[key]} onChange={onChange} ctx={ctx} required={schema.required?.includes(key)} />
      ))}
    </div>
  );
}

function Problems({ path, ctx }: { path: Path; ctx: FormContext }) {
  const found = ctx.problems.get(dotted(path));
  if (!found?.length) return null;
  return (
    <span class="field-problem" data-testid="field-problem">
      {found.join("; ")}
    </span>
  );
}

function Field({ name, schema, value, path, onChange, ctx, required }: { name: string; schema: Schema; value: JsonValue | undefined; path: Path; onChange: Change; ctx: FormContext; required?: boolean }) {
  const title = schema.title || name;
  const label = (
    <span class="field-label" title={schema.description}>
      {title}
      {required && <span class="required"> *</span>}
    </span>
  );
  const widget = schema["x-widget"];
  const id = `param-${dotted(path)}`;

  if (schema.type === "array" && schema.items?.type === "object") {
    return <ObjectList title={title} schema={schema.items} value={Array.isArray(value) ? value : []} path={path} onChange={onChange} ctx={ctx} />;
  }
  if (schema.type === "object" && (widget === "key_value" || schema.additionalProperties)) {
    return (
      <fieldset class="field">
        <legend>{label}</legend>
        <KeyValue value={value && typeof value === "object" && !Array.isArray(value) ? value : {}} path={path} onChange={onChange} ctx={ctx} template={(schema.additionalProperties as Schema | undefined)?.["x-widget"] === "template"} />
        <Problems path={path} ctx={ctx} />
      </fieldset>
    );
  }

  let control;
  if (schema.enum) {
    control = (
      <select name={id} value={value === undefined ? String(schema.default ?? "") : String(value)} onChange={(e) => onChange(path, e.currentTarget.value)}>
        {schema.default === undefined && <option value="">—</option>}
        {schema.enum.map((v) => (
          <option key={String(v)} value={String(v)}>
            {String(v)}
          </option>
        ))}
      </select>
    );
  } else if (schema.type === "boolean") {
    return (
      <label class="check field">
        <input type="checkbox" name={id} checked={value === undefined ? Boolean(schema.default) : Boolean(value)} onChange={(e) => onChange(path, e.currentTarget.checked)} />
        {label}
      </label>
    );
  } else if (schema.type === "number" || schema.type === "integer") {
    control = (
      <input
        name={id}
        type="number"
        min={schema.minimum}
        max={schema.maximum}
        step={schema.type === "integer" ? 1 : "any"}
        placeholder={schema.default === undefined ? "default" : String(schema.default)}
        value={typeof value === "number" ? String(value) : ""}
        onInput={(e) => {
          const raw = e.currentTarget.value;
          onChange(path, raw === "" ? undefined : Number(raw));
        }}
      />
    );
  } else if (schema.type === "array") {
    const list = Array.isArray(value) ? value.map(String) : [];
    const choices = widget === "knowledge_bases" ? ctx.knowledgeBases : null;
    control = choices ? (
      <select name={id} multiple onChange={(e) => onChange(path, Array.from(e.currentTarget.selectedOptions, (o) => o.value))}>
        {choices.map((c) => (
          <option key={c.value} value={c.value} selected={list.includes(c.value)}>
            {c.label}
          </option>
        ))}
      </select>
    ) : (
      <textarea name={id} rows={Math.max(2, list.length + 1)} placeholder="one per line" value={list.join("\n")} onInput={(e) => onChange(path, e.currentTarget.value.split("\n").filter((s) => s.trim() !== ""))} />
    );
  } else if (widget === "model" || widget === "node") {
    const choices = widget === "model" ? ctx.models : ctx.nodes;
    control = (
      <select name={id} value={typeof value === "string" ? value : ""} onChange={(e) => onChange(path, e.currentTarget.value || undefined)}>
        <option value="">{widget === "model" ? "default model" : "—"}</option>
        {choices.map((c) => (
          <option key={c.value} value={c.value}>
            {c.label}
          </option>
        ))}
      </select>
    );
  } else if (widget === "json" || (!schema.type && widget !== "template")) {
    control = <JsonField id={id} value={value} onChange={(v) => onChange(path, v)} />;
  } else {
    const text = typeof value === "string" ? value : value === undefined ? "" : JSON.stringify(value);
    const multi = widget === "template" || widget === "code";
    control = (
      <>
        {multi ? (
          <textarea name={id} class={widget === "code" ? "mono" : ""} rows={widget === "code" ? 8 : 2} value={text} onInput={(e) => onChange(path, e.currentTarget.value)} />
        ) : (
          <input name={id} value={text} onInput={(e) => onChange(path, e.currentTarget.value)} />
        )}
        {widget === "template" && <VariablePicker ctx={ctx} onPick={(v) => onChange(path, text + v)} />}
      </>
    );
  }
  return (
    <label class="field">
      {label}
      {control}
      <Problems path={path} ctx={ctx} />
    </label>
  );
}

function VariablePicker({ ctx, onPick }: { ctx: FormContext; onPick: (v: string) => void }) {
  if (ctx.variables.length === 0) return null;
  return (
    <select class="var-picker" aria-label="Insert a variable" value="" onChange={(e) => e.currentTarget.value && onPick(e.currentTarget.value)}>
      <option value="">+ variable</option>
      {ctx.variables.map((v) => (
        <option key={v} value={v}>
          {v}
        </option>
      ))}
    </select>
  );
}

function JsonField({ id, value, onChange }: { id: string; value: JsonValue | undefined; onChange: (v: JsonValue | undefined) => void }) {
  const text = value === undefined ? "" : typeof value === "string" ? value : JSON.stringify(value, null, 2);
  return (
    <textarea
      name={id}
      class="mono"
      rows={3}
      value={text}
      onChange={(e) => {
        const raw = e.currentTarget.value;
        if (raw.trim() === "") return onChange(undefined);
        try {
          onChange(JSON.parse(raw) as JsonValue);
        } catch {
          onChange(raw); // plain text
        }
      }}
    />
  );
}

function KeyValue({ value, path, onChange, ctx, template }: { value: JsonObject; path: Path; onChange: Change; ctx: FormContext; template: boolean }) {
  const entries = Object.entries(value);
  const rename = (from: string, to: string) => {
    const next: JsonObject = {};
    for (const [k, v] of entries) next[k === from ? to : k] = v;
    onChange(path, next);
  };
  return (
    <div class="kv">
      {entries.map(([k, v], i) => (
        <div class="kv-row" key={i}>
          <input name={`param-${dotted(path)}.key-${i}`} aria-label="Name" value={k} onChange={(e) => rename(k, e.currentTarget.value)} />
          <input name={`param-${dotted([...path, k])}`} aria-label={`Value of ${k}`} value={typeof v === "string" ? v : JSON.stringify(v)} onInput={(e) => onChange([...path, k], e.currentTarget.value)} />
          {template && <VariablePicker ctx={ctx} onPick={(p) => onChange([...path, k], (typeof v === "string" ? v : "") + p)} />}
          <button type="button" class="icon-btn" aria-label={`Remove ${k}`} onClick={() => onChange([...path, k], undefined)}>
            ×
          </button>
        </div>
      ))}
      <button
        type="button"
        class="btn small ghost"
        onClick={() => {
          let key = "key";
          for (let n = 2; key in value; n++) key = `key${n}`;
          onChange([...path, key], "");
        }}
      >
        + Add
      </button>
    </div>
  );
}

function ObjectList({ title, schema, value, path, onChange, ctx }: { title: string; schema: Schema; value: JsonValue[]; path: Path; onChange: Change; ctx: FormContext }) {
  return (
    <fieldset class="field object-list">
      <legend>{title}</legend>
      {value.map((item, i) => (
        <div class="object-item" key={i}>
          <div class="object-item-head">
            <span class="faint">#{i + 1}</span>
            <button type="button" class="icon-btn" aria-label={`Remove ${title} ${i + 1}`} onClick={() => onChange([...path, i], undefined)}>
              ×
            </button>
          </div>
          {ordered(schema).map(([key, prop]) => (
            <Field
              key={key}
              name={key}
              schema={prop}
              value={getAt(item, [key])}
              path={[...path, i, key]}
              onChange={onChange}
              ctx={ctx}
              required={schema.required?.includes(key)}
            />
          ))}
          <Problems path={[...path, i]} ctx={ctx} />
        </div>
      ))}
      <button type="button" class="btn small ghost" onClick={() => onChange([...path, value.length], blank(schema))}>
        + Add
      </button>
      <Problems path={path} ctx={ctx} />
    </fieldset>
  );
}
