"""The benchmark's Python handler: a JSON transform (the event's items
sorted by price, the ten cheapest and the total), the same as
../javascript/index.mjs."""


def handler(event, context):
    items = sorted(event["items"], key=lambda item: item["price"])
    return {
        "count": len(items),
        "items": items[:10],
        "total": sum(item["price"] for item in items),
    }
