"""A real gRPC peer for tests/grpc.rs, on `grpcio` and `grpcio-health-checking` (PyPI,
installed by .ci/run).

    grpc_peer.py server NAME [CERT KEY]   gRPC server on 127.0.0.1:0 (TLS with CERT and
                                          KEY); prints its port
    grpc_peer.py suite TARGET             every call kind once; one JSON object
    grpc_peer.py shares TARGET N          N unary calls on one channel: calls per backend
    grpc_peer.py call TARGET MESSAGE      one unary call: its answer or its status

The service `evenkeel.test.Echo` is served with generic handlers on raw bytes, so no
stub needs generating: the calls are real gRPC over HTTP/2 all the same. Its methods:
Unary (answers NAME:MESSAGE, with trailing metadata x-backend: NAME; "fail" aborts with
FAILED_PRECONDITION and trailing metadata; "sleep:S" sleeps S seconds first;
"health:STATUS" sets the server's health, reported by the standard
grpc.health.v1.Health service for "" and "echo"), ServerStream (MESSAGE = N: N
answers), ClientStream (one answer joining every message) and Bidi (an answer per
message, as they come).

Environment: GRPC_CAFILE, the CA for a TLS TARGET (its name must be "backend.test").
"""

import json
import os
import sys
import time
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

SERVICE = "evenkeel.test.Echo"


def serve(name, cert=None, key=None):
    checker = health.HealthServicer()
    for service in ("", "echo"):
        checker.set(service, health_pb2.HealthCheckResponse.SERVING)

    def unary(request, context):
        context.set_trailing_metadata((("x-backend", name),))
        if request == b"fail":
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, "failed on purpose")
        if request.startswith(b"sleep:"):
            time.sleep(float(request[6:]))
        if request.startswith(b"health:"):
            status = getattr(health_pb2.HealthCheckResponse, request[7:].decode())
            for service in ("", "echo"):
                checker.set(service, status)
        return name.encode() + b":" + request

    def server_stream(request, context):
        for i in range(int(request)):
            yield f"{name}:{i}".encode()

    def client_stream(requests, context):
        return name.encode() + b":" + b"+".join(requests)

    def bidi(requests, context):
        for request in requests:
            yield name.encode() + b":" + request

    handlers = {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream),
        "ClientStream": grpc.stream_unary_rpc_method_handler(client_stream),
        "Bidi": grpc.stream_stream_rpc_method_handler(bidi),
    }
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=32))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    health_pb2_grpc.add_HealthServicer_to_server(checker, server)
    if cert:
        with open(cert, "rb") as c, open(key, "rb") as k:
            credentials = grpc.ssl_server_credentials(((k.read(), c.read()),))
        port = server.add_secure_port("127.0.0.1:0", credentials)
    else:
        port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(port, flush=True)
    server.wait_for_termination()


def channel(target):
    cafile = os.environ.get("GRPC_CAFILE")
    if cafile:
        with open(cafile, "rb") as f:
            credentials = grpc.ssl_channel_credentials(f.read())
        return grpc.secure_channel(target, credentials)
    return grpc.insecure_channel(target)


def method(ch, kind, name):
    return getattr(ch, kind)(f"/{SERVICE}/{name}")


def status_of(error):
    return {
        "code": error.code().name,
        "details": error.details(),
        "trailers": dict(error.trailing_metadata() or ()),
    }


def call(ch, message, timeout=10):
    unary = method(ch, "unary_unary", "Unary")
    try:
        answer, call_ = unary.with_call(message.encode(), timeout=timeout)
        return {"ok": answer.decode(), "trailers": dict(call_.trailing_metadata() or ())}
    except grpc.RpcError as error:
        return status_of(error)


def suite(target):
    out = {}
    with channel(target) as ch:
        out["unary"] = call(ch, "hello")
        out["fail"] = call(ch, "fail")
        out["deadline"] = call(ch, "sleep:3", timeout=0.5)
        stream = method(ch, "unary_stream", "ServerStream")
        out["server_stream"] = [m.decode() for m in stream(b"5", timeout=10)]
        client = method(ch, "stream_unary", "ClientStream")
        out["client_stream"] = client(iter([b"a", b"b", b"c"]), timeout=10).decode()
        # Bidirectional: each message is sent only after the answer to the last came
        # back, so the call fails unless both directions stream at once.
        bidi = method(ch, "stream_stream", "Bidi")
        answers = []
        import queue

        outgoing = queue.Queue()

        def requests():
            while True:
                item = outgoing.get()
                if item is None:
                    return
                yield item

        outgoing.put(b"m0")
        for i, answer in enumerate(bidi(requests(), timeout=10)):
            answers.append(answer.decode())
            outgoing.put(f"m{i + 1}".encode() if i < 3 else None)
        out["bidi"] = answers
    print(json.dumps(out), flush=True)


def shares(target, n):
    counts = {}
    with channel(target) as ch:
        unary = method(ch, "unary_unary", "Unary")
        for _ in range(n):
            try:
                who = unary(b"who", timeout=10).decode().split(":")[0]
            except grpc.RpcError as error:
                who = error.code().name
            counts[who] = counts.get(who, 0) + 1
    print(json.dumps(counts), flush=True)


def main():
    mode = sys.argv[1]
    if mode == "server":
        serve(*sys.argv[2:])
    elif mode == "suite":
        suite(sys.argv[2])
    elif mode == "shares":
        shares(sys.argv[2], int(sys.argv[3]))
    elif mode == "call":
        with channel(sys.argv[2]) as ch:
            print(json.dumps(call(ch, sys.argv[3])), flush=True)
    else:
        sys.exit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
