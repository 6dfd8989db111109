// A JSON transform: the event's items, totalled and sorted by price.
//
//   wisp deploy transform-js --runtime javascript --handler index.handler examples/javascript
//   echo '{"items": [{"name": "b", "price": 2}, {"name": "a", "price": 1}]}' | wisp invoke transform-js
import { total } from "./pricing.mjs"; // a relative module shipped with the handler

export function handler(event, context) {
  const items = [...(event.items ?? [])].sort((a, b) => a.price - b.price);
  console.log(`${context.requestId}: ${items.length} item(s)`); // the function's log
  return { items, total: total(items), function: context.functionName };
}
