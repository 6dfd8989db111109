// The JavaScript handler as a `node` process per invocation: the event on
// stdin, the result on stdout, encoded as wisp's bootstrap does.
import { readFileSync } from "node:fs";
import { handler } from "../javascript/index.mjs";

process.stdout.write(JSON.stringify(handler(JSON.parse(readFileSync(0, "utf8")), null)));
