"""A real HTTP server on 127.0.0.1 speaking ``/v1/chat/completions``, scripted per test.

Each request takes the next :class:`Reply` of the script (the last one repeats
when the script runs out); a callable in the script is called with the request
body and returns the reply (or its content). Every request's JSON body and headers are kept in
``server.requests``. ``reject_response_format=True`` makes the server answer 400
to any request that carries ``response_format`` without consuming the script,
like servers that do not support structured output. ``Reply(raw=...)`` sends a
body verbatim and ``Reply(message=...)`` a message object of any shape, for
malformed answers.
"""
from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Optional


@dataclass
class Reply:
    """One scripted answer: message ``content`` with HTTP ``status`` after ``delay`` seconds."""

    content: Optional[str] = None
    status: int = 200
    delay: float = 0.0
    refusal: Optional[str] = None
    finish_reason: str = "stop"
    headers: dict = field(default_factory=dict)
    #: a body sent verbatim instead of a well-formed completion (malformed answers)
    raw: Optional[str] = None
    #: a ``message`` object sent instead of ``{"role": "assistant", "content": content}``
    message: Optional[object] = None


class FakeOpenAI:
    """Context manager: start the server, expose ``base_url``, stop it on exit."""

    def __init__(self, script: list, reject_response_format: bool = False) -> None:
        self.script = [r if isinstance(r, Reply) or callable(r) else Reply(content=r) for r in script]
        self.reject_response_format = reject_response_format
        self.requests: list[dict] = []
        self._lock = threading.Lock()
        self._served = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output clean
                pass

            def do_POST(self) -> None:
                n = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(n) or b"{}")
                with outer._lock:
                    headers = {k.lower(): v for k, v in self.headers.items()}
                    outer.requests.append({"path": self.path, "body": body, "headers": headers})
                    if self.path.rstrip("/") != "/v1/chat/completions":
                        reply = Reply(status=404, content="not found")
                    elif outer.reject_response_format and "response_format" in body:
                        reply = Reply(status=400, content="response_format is not supported by this server")
                    else:
                        reply = outer.script[min(outer._served, len(outer.script) - 1)]
                        outer._served += 1
                        if callable(reply):
                            reply = reply(body)
                            reply = reply if isinstance(reply, Reply) else Reply(content=reply)
                if reply.delay:
                    time.sleep(reply.delay)
                if reply.raw is not None:
                    payload = None
                elif reply.status == 200:
                    msg = {"role": "assistant", "content": reply.content}
                    if reply.refusal is not None:
                        msg = {"role": "assistant", "content": None, "refusal": reply.refusal}
                    if reply.message is not None:
                        msg = reply.message
                    payload = {"id": f"chatcmpl-{len(outer.requests)}", "object": "chat.completion",
                               "created": int(time.time()), "model": body.get("model", "fake"),
                               "choices": [{"index": 0, "message": msg,
                                            "finish_reason": reply.finish_reason}],
                               "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}
                else:
                    payload = {"error": {"message": reply.content or f"status {reply.status}",
                                         "type": "fake_error", "code": reply.status}}
                data = reply.raw.encode() if reply.raw is not None else json.dumps(payload).encode()
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    if reply.status != 200:
                        self.send_header("retry-after-ms", "5")
                    for k, v in reply.headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    @property
    def calls(self) -> int:
        return len(self.requests)

    def __enter__(self) -> "FakeOpenAI":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
