// The form a flow shows when it waits for human input (InputRequired): its fields, or one free-text box.
import { FormFieldType, type FormField, type InputRequired } from "@typecase/client/gen/typecase/v1/flow_pb.js";
import { useState } from "preact/hooks";
import type { JsonObject, JsonValue } from "../json";

export type InputValues = JsonObject;

function initial(fields: FormField[]): InputValues {
  const values: InputValues = {};
  for (const f of fields) {
    const d = f.defaultValue as JsonValue | undefined;
    if (d !== undefined && d !== null) values[f.name] = d;
    else if (f.type === FormFieldType.BOOLEAN) values[f.name] = false;
    else if (f.type === FormFieldType.MULTI_SELECT) values[f.name] = [];
    else values[f.name] = "";
  }
  return values;
}

export function InputForm({
  request,
  busy,
  onSubmit,
}: {
  request: InputRequired;
  busy?: boolean;
  onSubmit: (values: InputValues) => void;
}) {
  const fields = request.fields;
  const [values, setValues] = useState<InputValues>(() => (fields.length ? initial(fields) : { text: "" }));
  const set = (name: string, value: JsonValue) => setValues((v) => ({ ...v, [name]: value }));

  function submit(e: Event) {
    e.preventDefault();
    const out: InputValues = {};
    for (const [k, v] of Object.entries(values)) {
      const field = fields.find((f) => f.name === k);
      out[k] = field?.type === FormFieldType.NUMBER && v !== "" ? Number(v) : v;
    }
    onSubmit(out);
  }

  return (
    <form class="input-form" onSubmit={submit} data-testid="input-form">
      <div class="input-form-title">
        <b>{request.nodeName || request.nodeId}</b> needs your input
      </div>
      {request.prompt && <p class="input-prompt">{request.prompt}</p>}
      {fields.length === 0 && (
        <label>
          Answer
          <textarea name="text" rows={2} required value={String(values.text ?? "")} onInput={(e) => set("text", e.currentTarget.value)} />
        </label>
      )}
      {fields.map((f) => (
        <Field key={f.name} field={f} value={values[f.name]} onChange={(v) => set(f.name, v)} />
      ))}
      <button class="btn primary" type="submit" disabled={busy}>
        Continue
      </button>
    </form>
  );
}

function Field({ field, value, onChange }: { field: FormField; value: JsonValue; onChange: (v: JsonValue) => void }) {
  const label = (
    <span>
      {field.label || field.name}
      {field.required && <span class="required"> *</span>}
    </span>
  );
  const help = field.description ? <small class="muted">{field.description}</small> : null;
  switch (field.type) {
    case FormFieldType.TEXTAREA:
      return (
        <label>
          {label}
          <textarea name={field.name} rows={3} required={field.required} value={String(value ?? "")} onInput={(e) => onChange(e.currentTarget.value)} />
          {help}
        </label>
      );
    case FormFieldType.NUMBER:
      return (
        <label>
          {label}
          <input name={field.name} type="number" step="any" required={field.required} value={String(value ?? "")} onInput={(e) => onChange(e.currentTarget.value)} />
          {help}
        </label>
      );
    case FormFieldType.BOOLEAN:
      return (
        <label class="check">
          <input name={field.name} type="checkbox" checked={Boolean(value)} onChange={(e) => onChange(e.currentTarget.checked)} />
          {label}
          {help}
        </label>
      );
    case FormFieldType.SELECT:
      return (
        <label>
          {label}
          <select name={field.name} required={field.required} value={String(value ?? "")} onChange={(e) => onChange(e.currentTarget.value)}>
            <option value="">Choose…</option>
            {field.options.map((o) => (
              <option key={o} value={o}>
                {o}
              </option>
            ))}
          </select>
          {help}
        </label>
      );
    case FormFieldType.MULTI_SELECT: {
      const chosen = Array.isArray(value) ? (value as string[]) : [];
      return (
        <fieldset>
          <legend>{label}</legend>
          {field.options.map((o) => (
            <label class="check" key={o}>
              <input
                type="checkbox"
                name={field.name}
                checked={chosen.includes(o)}
                onChange={(e) => onChange(e.currentTarget.checked ? [...chosen, o] : chosen.filter((c) => c !== o))}
              />
              {o}
            </label>
          ))}
          {help}
        </fieldset>
      );
    }
    default: // TEXT, FILE (a knowledge-base file id or a URL), unspecified
      return (
        <label>
          {label}
          <input
            name={field.name}
            required={field.required}
            placeholder={field.type === FormFieldType.FILE ? "file id or URL" : ""}
            value={String(value ?? "")}
            onInput={(e) => onChange(e.currentTarget.value)}
          />
          {help}
        </label>
      );
  }
}
