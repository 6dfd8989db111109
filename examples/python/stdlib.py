"""A handler that uses json, re, datetime, hashlib and base64, and a data
file shipped with it (read once, at import: part of the snapshot).

    wisp deploy words --runtime python3.12 --handler stdlib.handler examples/python
    echo '{"text": "Snapshots make cold starts cheap"}' | wisp invoke words
"""

import base64
import datetime
import hashlib
import json
import os
import re

HERE = os.path.dirname(__file__)
with open(os.path.join(HERE, "data", "stopwords.json")) as f:
    STOPWORDS = set(json.load(f))


def handler(event, context):
    text = event["text"] if isinstance(event, dict) else str(event)
    words = [w.lower() for w in re.findall(r"[A-Za-z']+", text)]
    kept = [w for w in words if w not in STOPWORDS]
    return {
        "words": kept,
        "sha256": hashlib.sha256(text.encode()).hexdigest(),
        "base64": base64.b64encode(text.encode()).decode(),
        "at": datetime.datetime.now(datetime.timezone.utc).isoformat(),
    }
