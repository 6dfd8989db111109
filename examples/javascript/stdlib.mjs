// A handler that uses JSON, RegExp, Date, base64 (btoa), a SHA-256 module
// and a data file shipped with it (read once, at import: part of the
// snapshot): the JavaScript twin of examples/python/stdlib.py.
//
//   wisp deploy words-js --runtime javascript --handler stdlib.handler examples/javascript
//   echo '{"text": "Snapshots make cold starts cheap"}' | wisp invoke words-js
import * as std from "qjs:std";
import { sha256, utf8 } from "./sha256.mjs";

const root = std.getenv("WISP_TASK_ROOT") ?? "/var/task";
const STOPWORDS = new Set(JSON.parse(std.loadFile(`${root}/data/stopwords.json`)));

export async function handler(event) {
  const text = typeof event === "string" ? event : event.text;
  const words = (text.match(/[A-Za-z']+/g) ?? []).map((w) => w.toLowerCase());
  return {
    words: words.filter((w) => !STOPWORDS.has(w)),
    length: text.length,
    sha256: sha256(text),
    base64: btoa(String.fromCharCode(...utf8(text))),
    at: new Date().toISOString(),
  };
}
