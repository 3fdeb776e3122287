"""A fault-injecting HTTP proxy on loopback, in front of a real S3 endpoint (moto's server).

Clients are pointed at :attr:`FaultProxy.url` instead of the S3 endpoint. Every request is either
forwarded unchanged (method, path, headers, body) and the endpoint's answer relayed back, or answered
with a fault chosen by the proxy's :class:`FaultPlan`:

* ``"reset"``: the TCP connection is closed with an RST after the request was read (the client sees
  ``ConnectionResetError``; botocore retries it as a connection error);
* ``"lost"``: the request reaches the endpoint and is applied, but the answer is lost (RST instead of
  the response): the client retries a request that already succeeded;
* ``"500"``: ``500 InternalError`` with an S3 error document (retryable);
* ``"503"``: ``503 SlowDown`` (S3's throttling answer; retryable, and botocore's adaptive mode also
  slows its send rate);
* ``"403"``: ``403 AccessDenied`` (not retryable: a permanent failure);
* ``"501"``: ``501 NotImplemented``: what an endpoint without conditional writes answers to
  ``If-None-Match`` / ``If-Match`` (with ``conditional_only``, only those requests match).

Faults go to the first ``first_n`` matching requests, then to a ``fraction`` of the later ones (a
seeded RNG, so a run is reproducible), or to every matching request from request number ``from_n``
on (a permanent outage). ``methods`` restricts faults to some HTTP methods (e.g. only ``PUT``).
:attr:`FaultProxy.log` records what happened to each request, so tests can prove faults did happen.

    with FaultProxy(upstream, FaultPlan(kinds=("reset", "503"), first_n=3)) as proxy:
        os.environ["AWS_ENDPOINT_URL"] = proxy.url
        ...
"""

from __future__ import annotations

import http.client
import random
import socket
import struct
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

FAULT_KINDS = ("reset", "lost", "500", "503", "403", "501")
_S3_ERRORS = {
    "500": (500, "InternalError", "We encountered an internal error. Please try again."),
    "503": (503, "SlowDown", "Please reduce your request rate."),
    "403": (403, "AccessDenied", "Access Denied"),
    "501": (501, "NotImplemented", "A header you provided implies functionality that is not implemented."),
}
# Hop-by-hop headers are the proxy's own business (RFC 9110 section 7.6.1).
_HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade"}


@dataclass
class FaultPlan:
    """Which requests fail and how. Kinds rotate in order over the faulted requests."""

    kinds: tuple[str, ...] = ("reset", "500", "503")
    first_n: int = 0                  # fault the first N matching requests
    fraction: float = 0.0             # then fault this share of the later matching requests
    from_n: int | None = None         # fault every matching request with number >= from_n (0-based)
    methods: tuple[str, ...] = ()     # only requests with these methods match ('' = all)
    conditional_only: bool = False    # only requests with If-None-Match / If-Match headers match
    seed: int = 0

    def __post_init__(self) -> None:
        unknown = set(self.kinds) - set(FAULT_KINDS)
        if unknown or not self.kinds:
            raise ValueError(f"fault kinds must be a non-empty subset of {FAULT_KINDS}, got {self.kinds}")


@dataclass
class RequestRecord:
    number: int       # order of arrival among matching requests (-1: did not match the plan)
    method: str
    path: str
    outcome: str      # "forwarded" or a fault kind


@dataclass
class FaultProxy:
    upstream: str
    plan: FaultPlan = field(default_factory=FaultPlan)

    def __post_init__(self) -> None:
        parsed = urlparse(self.upstream)
        self._upstream_host, self._upstream_port = parsed.hostname, parsed.port or 80
        self._lock = threading.Lock()
        self._rng = random.Random(self.plan.seed)
        self._matching = 0
        self._faults = 0
        self.log: list[RequestRecord] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="faultproxy", daemon=True)

    # -- lifecycle ---------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "FaultProxy":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> "FaultProxy":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- bookkeeping -------------------------------------------------------------------------------
    def faults(self, kind: str | None = None) -> list[RequestRecord]:
        with self._lock:
            return [r for r in self.log if r.outcome != "forwarded" and (kind is None or r.outcome == kind)]

    def forwarded(self) -> list[RequestRecord]:
        with self._lock:
            return [r for r in self.log if r.outcome == "forwarded"]

    def set_plan(self, plan: FaultPlan) -> None:
        """Switch plans (e.g. heal an outage); numbering of matching requests restarts."""
        with self._lock:
            self.plan, self._rng, self._matching, self._faults = plan, random.Random(plan.seed), 0, 0

    def _decide(self, method: str, path: str, conditional: bool = False) -> str:
        with self._lock:
            plan = self.plan
            if (plan.methods and method not in plan.methods) or (plan.conditional_only and not conditional):
                self.log.append(RequestRecord(-1, method, path, "forwarded"))
                return "forwarded"
            number = self._matching
            self._matching += 1
            fault = (number < plan.first_n
                     or (plan.from_n is not None and number >= plan.from_n)
                     or (number >= plan.first_n and plan.fraction > 0 and self._rng.random() < plan.fraction))
            outcome = plan.kinds[self._faults % len(plan.kinds)] if fault else "forwarded"
            if fault:
                self._faults += 1
            self.log.append(RequestRecord(number, method, path, outcome))
            return outcome

    # -- the HTTP side -----------------------------------------------------------------------------
    def _handler_class(self):
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # keep test output clean
                pass

            def _read_body(self) -> bytes:
                if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                    chunks = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass  # trailers
                            return b"".join(chunks)
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            def _handle(self) -> None:
                body = self._read_body()
                conditional = bool(self.headers.get("If-None-Match") or self.headers.get("If-Match"))
                outcome = proxy._decide(self.command, self.path, conditional)
                if outcome in ("reset", "lost"):
                    if outcome == "lost":
                        self._forward(body, relay=False)
                    # SO_LINGER with a zero timeout: close() sends RST instead of FIN.
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.close_connection = True
                    self.connection.close()
                    return
                if outcome in _S3_ERRORS:
                    status, code, message = _S3_ERRORS[outcome]
                    payload = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
                               f"<Message>{message}</Message><RequestId>faultproxy</RequestId></Error>").encode()
                    self.send_response(status)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(payload)
                    return
                self._forward(body)

            def _forward(self, body: bytes, relay: bool = True) -> None:
                upstream = http.client.HTTPConnection(proxy._upstream_host, proxy._upstream_port, timeout=60)
                try:
                    # The proxy already answered any "Expect: 100-continue" itself.
                    headers = {k: v for k, v in self.headers.items()
                               if k.lower() not in _HOP_BY_HOP and k.lower() != "expect"}
                    if body or self.command in ("PUT", "POST"):
                        headers["Content-Length"] = str(len(body))
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    response = upstream.getresponse()
                    payload = response.read()
                    if not relay:
                        return
                    self.send_response(response.status, response.reason)
                    for name, value in response.getheaders():
                        if name.lower() not in _HOP_BY_HOP and name.lower() != "content-length":
                            self.send_header(name, value)
                    # A HEAD answer announces the object's length but carries no body.
                    length = response.getheader("Content-Length") if self.command == "HEAD" else str(len(payload))
                    self.send_header("Content-Length", length or "0")
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(payload)
                finally:
                    upstream.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        return Handler


def store_snapshot(uri: str) -> dict[str, bytes]:
    """Every object of a store, key -> bytes; ``manifest.json`` without its ``created_at`` field
    (the commit time, the one value that differs between two otherwise identical runs)."""
    import json

    from signpose.store import open_store

    store = open_store(uri)
    snapshot = {key: store.get_bytes(key) for key in store.list()}
    if "manifest.json" in snapshot:
        manifest = json.loads(snapshot["manifest.json"])
        manifest.pop("created_at")
        snapshot["manifest.json"] = json.dumps(manifest, sort_keys=True).encode()
    return snapshot
