"""A JSON transform: the event's items, totalled and sorted by price.

    wisp deploy transform --runtime python3.12 --handler app.handler examples/python
    echo '{"items": [{"name": "b", "price": 2}, {"name": "a", "price": 1}]}' | wisp invoke transform
"""

from pricing import total  # a sibling module shipped with the handler


def handler(event, context):
    items = sorted(event.get("items", []), key=lambda item: item["price"])
    print(f"{context.request_id}: {len(items)} item(s)")  # the function's log
    return {"items": items, "total": total(items), "function": context.function_name}
