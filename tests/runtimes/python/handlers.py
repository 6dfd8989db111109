"""Handlers for tests/runtimes.rs: one deploy of this directory per handler."""

import json
import os
import random
import time

from vendored.greeting import greet  # a vendored pure-Python package

IMPORTED_AT = time.time()
IMPORT_RANDOM = random.random()
COUNTER = 0
with open(os.path.join(os.path.dirname(__file__), "data.json")) as f:
    DATA = json.load(f)


def echo(event, context):
    return {"event": event, "request_id": context.request_id, "function": context.function_name,
            "remaining_ms": context.get_remaining_time_in_millis()}


def text(event, context):
    return "plain " + str(event)


def state(event, context):
    global COUNTER
    COUNTER += 1
    print("counter is", COUNTER)
    return {"counter": COUNTER, "random": random.random(), "urandom": os.urandom(8).hex(),
            "import_random": IMPORT_RANDOM, "now": time.time(), "imported_at": IMPORTED_AT}


def files(event, context):
    with open(os.path.join(os.path.dirname(__file__), "data.json")) as f:
        per_request = json.load(f)
    return {"at_import": DATA, "per_request": per_request, "greeting": greet(event["name"])}


def fail(event, context):
    raise ValueError("no " + event["what"])


def spin(event, context):
    while True:
        pass


def raw(event, context):
    # Not JSON and not UTF-8: the body as bytes, and bytes go back as they are.
    return bytes(reversed(event)) if isinstance(event, bytes) else repr(event)


def flood(event, context):
    return "x" * (7 << 20)  # past the 6 MiB output limit
