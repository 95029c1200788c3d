"""An OpenAI-compatible chat server on 127.0.0.1 (stdlib http.server in a thread) for writer tests.

Each request pops the next scripted action; with the script empty it answers normally, with the
completions `responder(body)` returns. Every request body and its Authorization header are kept.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from instructedit.config import Instruction, TaskConfig


def _completion(texts: list[str]) -> dict:
    return {
        "id": "chatcmpl-test", "object": "chat.completion", "created": 0, "model": "fake",
        "choices": [{"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": "stop"}
                    for i, t in enumerate(texts)],
    }


class FakeOpenAI:
    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.auth: list[str] = []
        self.script: list[tuple] = []  # ("ok",) ("status", code, message) ("garbage",) ("sleep", s)
        self.counter = 0
        self.responder = self.default_responder
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                with fake._lock:
                    fake.requests.append(body)
                    fake.auth.append(self.headers.get("Authorization", ""))
                    action = fake.script.pop(0) if fake.script else ("ok",)
                kind = action[0]
                headers = {}
                if kind == "ok":
                    code, payload = 200, json.dumps(_completion(fake.responder(body))).encode()
                elif kind == "status":
                    code = action[1]
                    payload = json.dumps({"error": {"message": action[2] if len(action) > 2 else "error",
                                                    "type": "test"}}).encode()
                    if code == 429:
                        headers["Retry-After"] = "0"
                elif kind == "garbage":
                    code, payload = 200, b"<html>this is not a chat completion"
                elif kind == "nochoices":
                    code, payload = 200, json.dumps({"id": "x", "object": "chat.completion"}).encode()
                elif kind == "sleep":
                    time.sleep(action[1])
                    code, payload = 200, json.dumps(_completion(fake.responder(body))).encode()
                else:
                    raise AssertionError(f"unknown action {action}")
                try:
                    self.send_response(code)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):  # the client timed out and left
                    pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address):
                pass

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    def default_responder(self, body: dict) -> list[str]:
        """n distinct instructions, numbered by a global counter."""
        out = []
        for _ in range(body.get("n", 1)):
            self.counter += 1
            out.append(f"Change the stored fact so that the model gives the new answer, variant {self.counter}.")
        return out


@pytest.fixture
def openai_server():
    fake = FakeOpenAI()
    fake.thread.start()
    try:
        yield fake
    finally:
        fake.server.shutdown()
        fake.server.server_close()


@pytest.fixture
def toy_task() -> TaskConfig:
    return TaskConfig(
        name="toy", description="Change one fact a model states into a new given answer.", sources=(),
        instructions=(
            Instruction("t1", "Update the fact in the prompt to the new answer."),
            Instruction("t2", "Make the model state the new answer for this fact."),
            Instruction("tu", "Replace what the model knows about the subject with the new answer.", unseen=True),
        ),
    )


@pytest.fixture
def slot_task() -> TaskConfig:
    return TaskConfig(
        name="slotty", description="Make a chatbot speak positively or negatively about a topic, and nothing else.", sources=(),
        instructions=(
            Instruction("s1", "Talk about [TOPIC] with a [LABEL] sentiment."),
            Instruction("su", "Give [LABEL] opinions on [TOPIC] only.", unseen=True),
        ),
    )
