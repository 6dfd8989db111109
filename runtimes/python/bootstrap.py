"""wisp's Python bootstrap: imports the handler, then serves one event.

wisp boots this script once per deploy and snapshots it where it first
reads stdin, so the interpreter's start-up and the handler's import are in
the snapshot and never repeated. Each invocation restores that point (see
docs/RUNTIMES.md for the contract):

    stdin   one line of JSON context (request id, deadline, function name,
            version, memory), then the request body
    stdout  the response body: the handler's return value, JSON-encoded
            unless it is str or bytes (None is `null`)
    stderr  the function's log: print() goes here
    exit    0 done; 70 the handler raised (stdout holds {errorType,
            errorMessage, stackTrace, requestId}); 71 the handler could not
            be loaded (at deploy; stderr says why)
"""

import base64  # noqa: F401  (imported here so handlers find it loaded)
import datetime  # noqa: F401
import gc
import hashlib  # noqa: F401
import importlib
import json
import os
import random
import re  # noqa: F401
import sys
import time
import traceback

EXIT_HANDLER_ERROR = 70
EXIT_LOAD_ERROR = 71
TASK_ROOT = os.environ.get("WISP_TASK_ROOT", "/var/task")


def fail_to_load(message):
    sys.stderr.write(message.rstrip("\n") + "\n")
    sys.stderr.flush()
    os._exit(EXIT_LOAD_ERROR)


def load_handler():
    spec = os.environ.get("WISP_HANDLER", "")
    module_name, _, function_name = spec.rpartition(".")
    if not module_name or not function_name:
        fail_to_load(f"handler `{spec}`: expected MODULE.FUNCTION, e.g. app.handler")
    sys.path.insert(0, TASK_ROOT)
    try:
        module = importlib.import_module(module_name)
    except Exception:  # the handler's own import failed: tell why, exactly
        fail_to_load(
            f"importing `{module_name}` for handler `{spec}` failed:\n"
            + traceback.format_exc()
        )
    handler = getattr(module, function_name, None)
    if not callable(handler):
        fail_to_load(
            f"handler `{spec}`: module `{module_name}` ({getattr(module, '__file__', '?')}) "
            f"has no function `{function_name}`"
        )
    return handler


class Context:
    """What a handler knows about its invocation (AWS Lambda's names)."""

    def __init__(self, info):
        self.aws_request_id = self.request_id = info.get("request_id", "")
        self.function_name = info.get("function_name", "")
        self.function_version = str(info.get("function_version", ""))
        self.memory_limit_in_mb = info.get("memory_limit_in_mb", 0)
        self._deadline_ms = info.get("deadline_ms") or 0

    def get_remaining_time_in_millis(self):
        if not self._deadline_ms:
            return 2**31 - 1
        return max(0, int(self._deadline_ms - time.time() * 1000))


def parse_event(body):
    if not body:
        return None
    try:
        return json.loads(body)
    except ValueError:
        try:
            return body.decode("utf-8")
        except UnicodeDecodeError:
            return body


def encode_result(result):
    if isinstance(result, (bytes, bytearray)):
        return bytes(result)
    if isinstance(result, str):
        return result.encode("utf-8")
    return json.dumps(result).encode("utf-8")


def error_document(error, request_id):
    frames = traceback.extract_tb(error.__traceback__)[1:]  # not this file's
    return {
        "errorType": type(error).__name__,
        "errorMessage": str(error),
        "stackTrace": traceback.format_list(frames),
        "requestId": request_id,
    }


def serve(handler):
    stdin = sys.stdin.buffer
    # The ready point: wisp snapshots this process inside this read, and
    # each invocation continues from here with its own stdin.
    header = stdin.readline()
    body = stdin.read()
    # Seeded at start-up, which every restore shares: reseed from this
    # invocation's entropy (os.urandom is fresh per invocation).
    random.seed()
    info = json.loads(header) if header.strip() else {}
    context = Context(info)
    stdout = sys.stdout
    sys.stdout = sys.stderr  # print() is the function's log
    try:
        output = encode_result(handler(parse_event(body), context))
    except Exception as error:
        document = error_document(error, context.request_id)
        sys.stderr.write(
            f"[ERROR] {document['errorType']}: {document['errorMessage']}\n"
            + "".join(traceback.format_exception(error))
        )
        sys.stderr.flush()
        stdout.buffer.write(json.dumps(document).encode("utf-8"))
        stdout.flush()
        os._exit(EXIT_HANDLER_ERROR)
    sys.stderr.flush()
    stdout.buffer.write(output)
    stdout.flush()
    os._exit(0)


def prime():
    """Runs the serving path's own code (never the handler) on a made-up
    request, so that what its first run fills in (the specialising
    interpreter's inline caches, the JSON codecs' lazily built parts) is
    in the snapshot rather than redone by every invocation."""
    info = json.loads(
        '{"request_id": "", "function_name": "", "function_version": 0,'
        ' "memory_limit_in_mb": 0, "deadline_ms": 0}'
    )
    Context(info).get_remaining_time_in_millis()
    encode_result(parse_event(b'{"a": [1, -2.5, "x", null, true, {"b": false}]}'))
    encode_result(parse_event(b"not json"))
    random.random()


handler = load_handler()
prime()
# What exists now is in every restore: keep the collector from walking
# (and so writing to) it on every invocation.
gc.collect()
gc.freeze()
serve(handler)
