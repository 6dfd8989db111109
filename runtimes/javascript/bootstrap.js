// wisp's JavaScript bootstrap: imports the handler, then serves one event.
//
// wisp boots this module once per deploy and snapshots it where it first
// reads stdin, so the engine's start-up and the handler's import are in
// the snapshot and never repeated. Each invocation restores that point
// (the contract, shared with the Python runtime, is docs/RUNTIMES.md):
//
//   stdin   one line of JSON context, then the request body
//   stdout  the response body: the handler's value (awaited), JSON-encoded
//           unless it is a string, an ArrayBuffer or a typed array
//   stderr  the function's log: console.* and print go here
//   exit    0 done; 70 the handler threw (stdout holds {errorType,
//           errorMessage, stackTrace, requestId}); 71 the handler could
//           not be loaded (at deploy; stderr says why)
import * as std from "qjs:std";
import * as os from "qjs:os";

const EXIT_HANDLER_ERROR = 70;
const EXIT_LOAD_ERROR = 71;
const TASK_ROOT = std.getenv("WISP_TASK_ROOT") ?? "/var/task";

function describe(value) {
  if (typeof value === "string") return value;
  if (value instanceof Error) return `${value.name}: ${value.message}\n${value.stack ?? ""}`.trimEnd();
  try {
    return JSON.stringify(value) ?? String(value);
  } catch {
    return String(value);
  }
}

function log(...values) {
  std.err.puts(values.map(describe).join(" ") + "\n");
  std.err.flush();
}

// quickjs-libc's console writes to stdout, which is the response here.
globalThis.console = { log, info: log, warn: log, error: log, debug: log, trace: log };
globalThis.print = log;
globalThis.setTimeout ??= os.setTimeout;
globalThis.clearTimeout ??= os.clearTimeout;

function failToLoad(message) {
  std.err.puts(message + "\n");
  std.err.flush();
  std.exit(EXIT_LOAD_ERROR);
}

function exists(path) {
  const [stat, err] = os.stat(path);
  return err === 0 && (stat.mode & os.S_IFMT) === os.S_IFREG;
}

async function loadHandler() {
  const spec = std.getenv("WISP_HANDLER") ?? "";
  const dot = spec.lastIndexOf(".");
  if (dot <= 0 || dot === spec.length - 1) {
    failToLoad(`handler \`${spec}\`: expected FILE.FUNCTION, e.g. index.handler`);
  }
  const base = spec.slice(0, dot);
  const name = spec.slice(dot + 1);
  const candidates = [".mjs", ".js"].map((ext) => `${TASK_ROOT}/${base}${ext}`);
  const file = candidates.find(exists);
  if (!file) failToLoad(`handler \`${spec}\`: neither ${candidates.join(" nor ")} exists`);
  let module;
  try {
    module = await import(file);
  } catch (error) {
    failToLoad(`importing ${file} for handler \`${spec}\` failed:\n${describe(error)}`);
  }
  const handler = module[name] ?? module.default?.[name];
  if (typeof handler !== "function") {
    failToLoad(`handler \`${spec}\`: ${file} exports no function \`${name}\``);
  }
  return handler;
}

function context(info) {
  const deadline = info.deadline_ms || 0;
  return {
    awsRequestId: info.request_id ?? "",
    requestId: info.request_id ?? "",
    functionName: info.function_name ?? "",
    functionVersion: String(info.function_version ?? ""),
    memoryLimitInMB: info.memory_limit_in_mb ?? 0,
    getRemainingTimeInMillis: () => (deadline ? Math.max(0, deadline - Date.now()) : 2 ** 31 - 1),
  };
}

function parseEvent(body) {
  if (body.length === 0) return null;
  try {
    return JSON.parse(body);
  } catch {
    return body;
  }
}

function writeResult(value) {
  if (value instanceof ArrayBuffer) {
    std.out.write(value, 0, value.byteLength);
  } else if (ArrayBuffer.isView(value)) {
    std.out.write(value.buffer, value.byteOffset, value.byteLength);
  } else if (typeof value === "string") {
    std.out.puts(value);
  } else {
    std.out.puts(JSON.stringify(value ?? null));
  }
  std.out.flush();
}

function errorDocument(error, requestId) {
  const isError = error instanceof Error;
  return {
    errorType: isError ? error.name : typeof error,
    errorMessage: isError ? error.message : describe(error),
    stackTrace: isError && error.stack ? error.stack.split("\n").filter((l) => l.trim()) : [],
    requestId,
  };
}

const handler = await loadHandler();
// The ready point: wisp snapshots this process inside this read, and each
// invocation continues from here with its own stdin.
const header = std.in.getline() ?? "";
const body = std.in.readAsString();
const ctx = context(header.trim() ? JSON.parse(header) : {});
try {
  writeResult(await handler(parseEvent(body), ctx));
} catch (error) {
  const document = errorDocument(error, ctx.requestId);
  log(`[ERROR] ${document.errorType}: ${document.errorMessage}`);
  std.out.puts(JSON.stringify(document));
  std.out.flush();
  std.exit(EXIT_HANDLER_ERROR);
}
std.exit(0);
