// A syntax error: the deploy must refuse it with the interpreter's words.
export function handler(event, context) {
  return { ok: true ;
}
