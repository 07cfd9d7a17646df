// One streamed turn against the agent runtime, from Node.js, straight from the .proto files.
//
//   node client.js [SESSION_ID] [MESSAGE]      (server: $AGENT_RUNTIME_ADDRESS or 127.0.0.1:50051)
//
// Exit code: 0 when the turn completes normally (an answer, a tool call, a pending approval),
// 1 when the call fails with a gRPC status or the turn ends with STOP_REASON_ERROR.
"use strict";

const path = require("node:path");
const { randomUUID } = require("node:crypto");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

// Load the wire contract at run time: no code generation, no build step. Imports are resolved
// against includeDirs; google/protobuf/*.proto (Struct, Timestamp) are built into proto-loader.
const definition = protoLoader.loadSync(
  ["agent_runtime/v1/agent_runtime.proto", "agent_runtime/v1/session.proto"],
  {
    includeDirs: [path.join(__dirname, "..", "..", "protos")],
    keepCase: true, // field names as in the .proto: session_id, turn_completed, ...
    longs: String, // uint64 (seq, position) as decimal strings
    enums: String, // "STOP_REASON_END_TURN" rather than 1
    defaults: true, // absent fields get their proto3 default
    oneofs: true, // chunk.chunk names the member of the oneof that is set
  },
);
const v1 = grpc.loadPackageDefinition(definition).agent_runtime.v1;

const address = process.env.AGENT_RUNTIME_ADDRESS || "127.0.0.1:50051";
const sessionId = process.argv[2] || "node-example";
const content = process.argv.length > 3 ? process.argv[3] : "hello from node";
const credentials = grpc.credentials.createInsecure(); // plaintext, like grpcurl -plaintext
const runtime = new v1.AgentRuntimeService(address, credentials);
const sessions = new v1.SessionService(address, credentials);
const deadline = () => new Date(Date.now() + 60_000); // never wait forever

// google.protobuf.Struct (tool arguments) arrives as {fields: {name: {kind, <kind>: value}}}.
const fromValue = (v) =>
  v.kind === "structValue" ? fromStruct(v.structValue)
  : v.kind === "listValue" ? (v.listValue.values || []).map(fromValue)
  : v.kind === "nullValue" ? null
  : v[v.kind];
const fromStruct = (s) =>
  Object.fromEntries(Object.entries((s && s.fields) || {}).map(([k, v]) => [k, fromValue(v)]));
// ...and a plain object (a tool's JSON Schema) goes out the same way.
const toValue = (v) =>
  v === null ? { nullValue: "NULL_VALUE" }
  : Array.isArray(v) ? { listValue: { values: v.map(toValue) } }
  : typeof v === "object" ? { structValue: toStruct(v) }
  : typeof v === "number" ? { numberValue: v }
  : typeof v === "boolean" ? { boolValue: v }
  : { stringValue: String(v) };
const toStruct = (o) =>
  ({ fields: Object.fromEntries(Object.entries(o).map(([k, v]) => [k, toValue(v)])) });

// A tool of the client's own, as an IDE declares its MCP servers' tools: the runtime offers
// it to the model beside the agent's built-in tools, checks the model's arguments against its
// JSON Schema, and sends the call here to run (examples/mcp/ shows a whole bridge).
const lintTool = {
  name: "ide_lint",
  description: "Run the IDE's linter on one file and return its findings",
  parameters: toStruct({
    type: "object",
    properties: { path: { type: "string" }, max_problems: { type: "integer", minimum: 1 } },
    required: ["path"],
    additionalProperties: false,
  }),
};

// The client_message_id is the idempotency key: sending the same request again (same key)
// replays the original turn instead of starting a second one.
// Generation settings for this request (each one set wins over the session's and the agent's),
// and the client's tools for this request's turn.
const request = {
  session_id: sessionId,
  client_message_id: randomUUID(),
  user_message: { content },
  generation: { temperature: 0.2, max_output_tokens: 1024 },
  tools: [lintTool],
};
let stopReason = null;
let failed = false;
let midLine = null; // what the current line streams ("text", "reasoning", a call id), or null
const say = (text, out = console.log) => { if (midLine) console.log(); midLine = null; out(text); };
const stream = (kind, head, text) => { // deltas are written inline, one line per kind
  if (midLine !== kind) { if (midLine) console.log(); process.stdout.write(head); midLine = kind; }
  process.stdout.write(text);
};
const finish = (code) => { process.exitCode = code; runtime.close(); sessions.close(); };
const call = runtime.StreamMessage(request, { deadline: deadline() });

call.on("data", (chunk) => {
  const body = chunk[chunk.chunk]; // e.g. chunk.assistant_delta when chunk.chunk === "assistant_delta"
  switch (chunk.chunk) {
    case "turn_started":
      say(`[${chunk.seq}] turn_started ${body.turn_id} (agent ${body.agent})`);
      break;
    case "assistant_delta": // tokens: print them inline as they come
      stream("text", "", body.text);
      break;
    case "reasoning_delta": // the model's reasoning, when it streams one
      stream("reasoning", "(thinking) ", body.text);
      break;
    case "tool_call_delta": // a call's arguments while the model writes them (the call follows)
      stream(body.call_id, `[writing ${body.tool_name}] `, body.arguments_fragment);
      break;
    case "assistant_message":
      say(`[${chunk.seq}] assistant_message ${body.message_id}: ${body.content}`);
      break;
    case "tool_call":
      say(`[${chunk.seq}] tool_call ${body.call_id} ${body.tool_name} ` +
        `${JSON.stringify(fromStruct(body.arguments))}` +
        (body.requires_approval ? ` (needs approval: ${body.approval_reason})` : ""));
      break;
    case "agent_switched":
      say(`[${chunk.seq}] agent_switched ${body.from_agent} -> ${body.to_agent}`);
      break;
    case "error":
      say(`[${chunk.seq}] error ${body.code}/${body.reason}: ${body.message}` +
        (body.retryable ? " (retryable)" : ""));
      break;
    case "turn_completed":
      stopReason = body.stop_reason;
      say(`[${chunk.seq}] turn_completed ${stopReason}`);
      break;
  }
});

// A gRPC status (bad input, busy session, server down...): nothing more to do.
call.on("error", (err) => {
  failed = true;
  say(`RPC failed: ${grpc.status[err.code]} (${err.code}): ${err.details}`, console.error);
  finish(1);
});

// The stream ended cleanly: show the session's persisted history, then exit.
call.on("end", () => {
  if (failed) return;
  if (stopReason === null) {
    say("stream ended without turn_completed", console.error);
    return finish(1);
  }
  sessions.ListMessages({ session_id: sessionId }, { deadline: deadline() }, (err, res) => {
    if (err) {
      console.error(`ListMessages failed: ${grpc.status[err.code]}: ${err.details}`);
      return finish(1);
    }
    console.log(`history of ${sessionId}:`);
    for (const m of res.messages) {
      const calls = m.tool_calls.map((c) => ` -> ${c.tool_name}(${JSON.stringify(fromStruct(c.arguments))})`);
      console.log(`  ${m.position}. ${m.role}: ${JSON.stringify(m.content)}${calls.join("")}`);
    }
    finish(stopReason === "STOP_REASON_ERROR" ? 1 : 0);
  });
});
