"""A stand-in OpenAI-compatible server on 127.0.0.1 (http.server in a thread) for the error
paths and the offline path of the openai backend; `vllm serve` is the real one
(tests/integration/test_vllm.py).

It lists `served` under GET /v1/models, answers /v1/completions (echoed log-probabilities
split at spaces, or canned text) and /v1/chat/completions (canned text), with `usage`, and
records every request it gets.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

CHAT_REPLY = "A. from chat\nmore"
CHAT_USAGE = {"prompt_tokens": 41, "completion_tokens": 7, "total_tokens": 48}


class FakeOpenAI(BaseHTTPRequestHandler):
    """Canned OpenAI-style answers; records every request it gets as (method path, body,
    headers)."""

    seen: ClassVar[list[tuple[str, dict, dict]]] = []
    served: ClassVar[list[str]] = ["served-model"]
    key: ClassVar[str | None] = None  # when set, /v1/models wants "Bearer <key>"

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def do_GET(self) -> None:
        type(self).seen.append((f"GET {self.path}", {}, dict(self.headers)))
        if self.path != "/v1/models":
            return self._send(404, {"error": {"message": "not found"}})
        if self.key and self.headers.get("Authorization") != f"Bearer {self.key}":
            return self._send(401, {"error": {"message": "invalid api key"}})
        self._send(200, {"object": "list", "data": [{"id": m, "object": "model"} for m in self.served]})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).seen.append((self.path, body, dict(self.headers)))
        if body.get("model") == "broken":
            return self._send(400, {"error": {"message": "bad model"}})
        if self.path == "/v1/completions" and body.get("echo"):
            payload = {"choices": [echo_choice(p, i) for i, p in enumerate(body["prompt"])]}
        elif self.path == "/v1/completions":
            texts = [f"B. answer to {p}\nmore" for p in body["prompt"]]
            payload = {
                "choices": [{"index": i, "text": t} for i, t in reversed(list(enumerate(texts)))],
                "usage": {"prompt_tokens": 5 * len(texts), "completion_tokens": 3 * len(texts)},
            }
        else:
            message = {"role": "assistant", "content": CHAT_REPLY}
            payload = {"choices": [{"index": 0, "message": message}], "usage": CHAT_USAGE}
        self._send(200, payload)

    def _send(self, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def words(text: str) -> list[tuple[str, int]]:
    """Split like a tokenizer that attaches the leading space: [(token, offset)]."""
    out, start = [], 0
    for i in range(1, len(text) + 1):
        if i == len(text) or (text[i] == " " and text[i - 1] != " "):
            out.append((text[start:i], start))
            start = i
    return out


def lp(token: str) -> float:
    return -0.5 * len(token)


def echo_choice(prompt: str, index: int) -> dict:
    tokens = [*words(prompt), (" GEN", len(prompt))]  # plus the one generated token
    return {
        "index": index,
        "text": prompt + " GEN",
        "logprobs": {
            "tokens": [t for t, _ in tokens],
            "token_logprobs": [None] + [lp(t) for t, _ in tokens[1:]],
            "text_offset": [o for _, o in tokens],
            # a token is the argmax unless it contains an "x"
            "top_logprobs": [None] + [{("other" if "x" in t else t): -0.1} for t, _ in tokens[1:]],
        },
    }


@contextlib.contextmanager
def fake_openai(served: tuple[str, ...] = ("served-model",), key: str | None = None) -> Iterator[str]:
    """The server on a free loopback port, its request log emptied; yields its /v1 base URL."""
    FakeOpenAI.seen, FakeOpenAI.served, FakeOpenAI.key = [], list(served), key
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), FakeOpenAI)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    finally:
        httpd.shutdown()
        httpd.server_close()
