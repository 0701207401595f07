// How a server stream continues after a dropped connection, worked out once per method.
//
// Streams whose messages carry a `seq` replay their log after a given seq, so a reconnect asks for what came
// after the last seq seen and drops anything at or below it (no duplicates):
// - a stream whose request has `after_seq` (StreamTurnEvents, StreamRunEvents, StreamLogs) is sent again with
//   after_seq = last seq (and Last-Event-ID over SSE);
// - a stream that starts something (Chat, RunFlow, ResumeRun) continues on its events RPC once its first
//   message has told the turn or run id (CONTINUE_ON below: which RPC, keyed by id field);
// - a request with a `request_id` idempotency key gets a random one when the caller left it empty, and can then
//   be sent again before any id is known: the server re-attaches to the turn instead of asking twice.
// A stream of a type in TERMINAL ends with one of those events; ending without one means it was cut off, unless
// its last event was a PAUSE.

import type { DescField, DescMethod, DescMessage, DescOneof } from "@bufbuild/protobuf";

const CONTINUE_ON: Record<string, { method: string; id: string }> = {
  "typecase.v1.ChatService.Chat": { method: "StreamTurnEvents", id: "turn_id" },
  "typecase.v1.FlowService.RunFlow": { method: "StreamRunEvents", id: "run_id" },
  "typecase.v1.FlowService.ResumeRun": { method: "StreamRunEvents", id: "run_id" },
};

// Oneof cases (proto names) of an event type after which the server ends the stream.
const TERMINAL: Record<string, readonly string[]> = {
  "typecase.v1.TurnEvent": ["ended", "error"],
  "typecase.v1.RunEvent": ["run_finished", "run_failed"],
};

// Cases after which the stream ends if the run still waits there, and goes on if it did not (the replay of a run
// that was answered continues past its pause): a clean end after one is the pause, not a cut.
const PAUSE: Record<string, readonly string[]> = {
  "typecase.v1.RunEvent": ["input_required"],
};

export interface ResumePlan {
  /** Response field with the message's position in the log. */
  seq: DescField;
  /** The RPC to reconnect with, its id and after_seq request fields, and the response field with the id. */
  target: DescMethod;
  targetId?: DescField;
  afterSeq: DescField;
  responseId?: DescField;
  /** Request field holding the idempotency key (the first call may be re-sent). */
  requestId?: DescField;
  /** Tells whether a message is the stream's last one (undefined: the stream has no last message). */
  isTerminal?: (message: Record<string, unknown>) => boolean;
  /** Tells whether a message is a pause: the stream may end cleanly right after it. */
  isPause?: (message: Record<string, unknown>) => boolean;
}

const plans = new WeakMap<DescMethod, ResumePlan | null>();

export function resumePlan(method: DescMethod): ResumePlan | undefined {
  let plan = plans.get(method);
  if (plan === undefined) {
    plan = makePlan(method) ?? null;
    plans.set(method, plan);
  }
  return plan ?? undefined;
}

const field = (desc: DescMessage, name: string) => desc.fields.find((f) => f.name === name);

function isInt(f: DescField | undefined): f is DescField {
  return f !== undefined && f.fieldKind === "scalar";
}

function makePlan(method: DescMethod): ResumePlan | undefined {
  if (method.methodKind !== "server_streaming") return undefined;
  const seq = field(method.output, "seq");
  if (!isInt(seq)) return undefined;
  const isTerminal = eventTest(method.output, TERMINAL);
  const isPause = eventTest(method.output, PAUSE);
  const ownAfterSeq = field(method.input, "after_seq");
  if (isInt(ownAfterSeq)) return { seq, target: method, afterSeq: ownAfterSeq, isTerminal, isPause };
  const next = CONTINUE_ON[`${method.parent.typeName}.${method.name}`];
  if (next === undefined) return undefined;
  const target = method.parent.methods.find((m) => m.name === next.method);
  const afterSeq = target && field(target.input, "after_seq");
  const targetId = target && field(target.input, next.id);
  const responseId = field(method.output, next.id);
  if (!target || !isInt(afterSeq) || !targetId || !responseId) return undefined;
  const requestId = field(method.input, "request_id");
  return {
    seq,
    target,
    targetId,
    afterSeq,
    responseId,
    requestId: requestId?.fieldKind === "scalar" ? requestId : undefined,
    isTerminal,
    isPause,
  };
}

/** A test for the event cases `table` lists for the output's event type (undefined when it lists none). */
function eventTest(output: DescMessage, table: Record<string, readonly string[]>): ResumePlan["isTerminal"] {
  for (const f of output.fields) {
    if (f.fieldKind !== "message") continue;
    const cases = table[f.message.typeName];
    const oneof: DescOneof | undefined = f.message.oneofs[0];
    if (cases === undefined || oneof === undefined) continue;
    const local = new Set(oneof.fields.filter((m) => cases.includes(m.name)).map((m) => m.localName));
    return (message) => {
      const event = message[f.localName] as Record<string, { case?: string } | undefined> | undefined;
      const which = event?.[oneof.localName]?.case;
      return which !== undefined && local.has(which);
    };
  }
  return undefined;
}
