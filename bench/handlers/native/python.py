"""The Python handler as a native `python3` process per invocation: the
event on stdin, the result on stdout, encoded as wisp's bootstrap does."""

import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
import app  # noqa: E402

sys.stdout.write(json.dumps(app.handler(json.load(sys.stdin), None)))
