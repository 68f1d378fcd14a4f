// The official MCP Tasks requester (@modelcontextprotocol/ext-tasks) on the
// official TypeScript client (@modelcontextprotocol/client), pointed at one
// of the hub's MCP endpoints. Driven by tests/test_mcp_requester.py: the
// scenario comes as JSON in argv[2], commands come as lines on stdin, and
// every step is one JSON line on stdout.
//
// ext-tasks needs a host "rawDispatch" for 2026-07-28 task traffic (the
// SDK Client's codecs reject a tools/call answered with a task): this one
// sends the framed request over the Client's own transport (the same HTTP
// endpoint or the same stdio process) and hands back the matching answer.
import { Client, StreamableHTTPClientTransport } from "@modelcontextprotocol/client";
import { StdioClientTransport } from "@modelcontextprotocol/client/stdio";
import {
  createTaskSessionFromClient,
  resultFromTaskOutcome,
} from "@modelcontextprotocol/ext-tasks/client";
import { createInterface } from "node:readline";

const VERSION = "2026-07-28";
const config = JSON.parse(process.argv[2]);
const commands = createInterface({ input: process.stdin })[Symbol.asyncIterator]();

function say(event) {
  process.stdout.write(JSON.stringify(event) + "\n");
}

async function command() {
  const next = await commands.next();
  return next.done ? "" : next.value.trim();
}

function transportFor(config) {
  if (config.transport === "stdio") {
    return new StdioClientTransport({
      command: config.command,
      args: config.args,
      env: config.env,
      cwd: config.cwd,
      stderr: "inherit",
    });
  }
  return new StreamableHTTPClientTransport(new URL(config.url), {
    requestInit: { headers: { Authorization: `Bearer ${config.apiKey}` } },
  });
}

// Requests of our own on the Client's transport: their answers are taken
// off the transport before the Client sees them.
function rawDispatcher(transport) {
  const pending = new Map();
  let counter = 0;
  const clientOnMessage = transport.onmessage;
  transport.onmessage = (message, extra) => {
    const waiter = message && message.id !== undefined ? pending.get(message.id) : undefined;
    if (waiter === undefined) {
      clientOnMessage?.call(transport, message, extra);
      return;
    }
    pending.delete(message.id);
    waiter(message);
  };
  return async (request, options = {}) => {
    const id = `raw-${++counter}`;
    const answered = new Promise((resolve, reject) => {
      pending.set(id, resolve);
      options.signal?.addEventListener("abort", () => {
        pending.delete(id);
        reject(options.signal.reason ?? new Error("aborted"));
      });
    });
    await transport.send({ jsonrpc: "2.0", id, ...request });
    const message = await answered;
    return message.error !== undefined
      ? { kind: "error", error: message.error }
      : { kind: "result", result: message.result };
  };
}

async function connect(config) {
  const transport = transportFor(config);
  const client = new Client(
    { name: "beadhub-requester-test", version: "1.0.0" },
    { versionNegotiation: { mode: { pin: VERSION } } },
  );
  await client.connect(transport);
  const session = createTaskSessionFromClient(client, {
    endpointId: `beadhub-${config.transport}`,
    rawDispatch: rawDispatcher(transport),
    v2RequestFraming: {
      protocolVersion: VERSION,
      clientInfo: { name: "beadhub-requester-test", version: "1.0.0" },
      clientCapabilities: {},
    },
  });
  return { client, session };
}

function errorOf(error) {
  return { name: error?.name, code: error?.code, message: String(error?.message ?? error) };
}

async function settle(execution) {
  const statuses = [];
  const { outcome } = await execution.settle({
    onEvent: (event) => {
      if (event.type === "task") statuses.push(event.task.status);
    },
  });
  const settled = { event: "outcome", status: outcome.status, statuses };
  if (outcome.status === "completed") settled.result = resultFromTaskOutcome(outcome);
  if (outcome.status === "failed") settled.error = errorOf(outcome.error);
  return settled;
}

async function main() {
  const { client, session } = await connect(config);
  say({
    event: "connected",
    era: client.getProtocolEra(),
    version: client.getNegotiatedProtocolVersion(),
    capabilities: session.capabilities,
  });
  try {
    if (config.scenario === "foreign") {
      // Someone else's task id: every control of it must be refused.
      const controller = session.task(config.taskId);
      for (const [what, act] of [
        ["snapshot", () => controller.snapshot()],
        ["cancel", () => session.cancelTask(config.taskId)],
      ]) {
        try {
          await act();
          say({ event: "allowed", what });
        } catch (error) {
          say({ event: "refused", what, ...errorOf(error) });
        }
      }
      return;
    }
    const execution = await session.callTool(config.tool, config.arguments);
    say({ event: "started", kind: execution.kind, taskId: execution.handle?.taskId });
    if (config.scenario === "cancel") {
      if ((await command()) !== "cancel") throw new Error("expected the cancel command");
      await execution.cancel();
      say({ event: "cancel-sent" });
      const after = await session.task(execution.handle.taskId).snapshot();
      say({ event: "snapshot", status: after.status });
    }
    say(await settle(execution));
  } finally {
    await session.close();
    await client.close();
  }
}

main().then(
  () => process.exit(0),
  (error) => {
    say({ event: "crashed", ...errorOf(error), stack: error?.stack });
    process.exit(1);
  },
);
