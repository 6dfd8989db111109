// Handlers for tests/runtimes.rs: one deploy of this directory per handler.
import { shout } from "./lib/shout.mjs";

let counter = 0;
const importRandom = Math.random();

export function echo(event, context) {
  return { event, request_id: context.requestId, shout: shout("hi") };
}

export async function state() {
  counter += 1;
  console.log("counter is", counter);
  return { counter, random: Math.random(), import_random: importRandom, now: Date.now() };
}

export function fail(event) {
  throw new TypeError(`no ${event.what}`);
}
