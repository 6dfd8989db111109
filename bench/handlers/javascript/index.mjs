// The benchmark's JavaScript handler: the same JSON transform as
// ../python/app.py (a stable sort, so both answer alike).
export function handler(event, context) {
  const items = [...event.items].sort((a, b) => a.price - b.price);
  return {
    count: items.length,
    items: items.slice(0, 10),
    total: items.reduce((sum, item) => sum + item.price, 0),
  };
}
