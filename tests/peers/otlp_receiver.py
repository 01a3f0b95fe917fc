#!/usr/bin/env python3
"""An OTLP trace and log receiver for the export tests: the official OpenTelemetry protobuf
definitions (Debian's python3-opentelemetry-proto) decode each request, independently of
probectl's code.

    otlp_receiver.py http PORT OUT      # OTLP/HTTP: POST /v1/traces and /v1/logs, protobuf
    otlp_receiver.py grpc PORT OUT      # OTLP/gRPC: TraceService/Export, LogsService/Export
    otlp_receiver.py https PORT OUT CERT KEY    # the same over TLS (CERT: the chain, PEM)
    otlp_receiver.py grpcs PORT OUT CERT KEY

Every span received is appended to OUT as one JSON line (hex ids, kind and status as numbers,
attributes and resource attributes as objects), every log record to OUT.logs (its body as
"body" when a string, as "body_b64" when bytes); "listening" is printed once it accepts.
"""
import base64
import gzip
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

LOCK = threading.Lock()


def value(v):
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [value(item) for item in v.array_value.values]
    if kind == "bytes_value":
        return base64.b64encode(v.bytes_value).decode()
    return getattr(v, kind) if kind else None


def record_logs(request, out):
    lines = []
    for resource_logs in request.resource_logs:
        resource = {a.key: value(a.value) for a in resource_logs.resource.attributes}
        for scope_logs in resource_logs.scope_logs:
            for log in scope_logs.log_records:
                line = {
                    "trace_id": log.trace_id.hex(),
                    "span_id": log.span_id.hex(),
                    "event_name": log.event_name,
                    "time": log.time_unix_nano,
                    "severity": log.severity_number,
                    "attributes": {a.key: value(a.value) for a in log.attributes},
                    "resource": resource,
                    "scope": scope_logs.scope.name,
                }
                kind = log.body.WhichOneof("value")
                if kind == "string_value":
                    line["body"] = log.body.string_value
                elif kind == "bytes_value":
                    line["body_b64"] = base64.b64encode(log.body.bytes_value).decode()
                lines.append(json.dumps(line))
    with LOCK, open(out + ".logs", "a") as f:
        for line in lines:
            f.write(line + "\n")


def record(request, out):
    lines = []
    for resource_spans in request.resource_spans:
        resource = {a.key: value(a.value) for a in resource_spans.resource.attributes}
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                lines.append(json.dumps({
                    "trace_id": span.trace_id.hex(),
                    "span_id": span.span_id.hex(),
                    "parent_span_id": span.parent_span_id.hex(),
                    "name": span.name,
                    "kind": span.kind,
                    "start": span.start_time_unix_nano,
                    "end": span.end_time_unix_nano,
                    "status": span.status.code,
                    "attributes": {a.key: value(a.value) for a in span.attributes},
                    "resource": resource,
                    "scope": scope_spans.scope.name,
                }))
    with LOCK, open(out, "a") as f:
        for line in lines:
            f.write(line + "\n")


def serve_http(port, out, tls=None):
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            # The Collector's otlp_http exporter compresses with gzip by default.
            if self.headers.get("Content-Encoding", "") == "gzip":
                body = gzip.decompress(body)
            if self.path not in ("/v1/traces", "/v1/logs") \
                    or "protobuf" not in self.headers.get("Content-Type", ""):
                self.send_response(404)
                self.end_headers()
                return
            if self.path == "/v1/traces":
                request = trace_service_pb2.ExportTraceServiceRequest()
                request.ParseFromString(body)
                record(request, out)
                reply = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
            else:
                request = logs_service_pb2.ExportLogsServiceRequest()
                request.ParseFromString(body)
                record_logs(request, out)
                reply = logs_service_pb2.ExportLogsServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    if tls:
        import ssl
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*tls)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    print("listening", flush=True)
    server.serve_forever()


def serve_grpc(port, out, tls=None):
    from concurrent import futures

    import grpc
    from opentelemetry.proto.collector.logs.v1 import logs_service_pb2_grpc
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

    class Service(trace_service_pb2_grpc.TraceServiceServicer):
        def Export(self, request, context):
            record(request, out)
            return trace_service_pb2.ExportTraceServiceResponse()

    class Logs(logs_service_pb2_grpc.LogsServiceServicer):
        def Export(self, request, context):
            record_logs(request, out)
            return logs_service_pb2.ExportLogsServiceResponse()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Service(), server)
    logs_service_pb2_grpc.add_LogsServiceServicer_to_server(Logs(), server)
    if tls:
        cert, key = (open(path, "rb").read() for path in tls)
        credentials = grpc.ssl_server_credentials([(key, cert)])
        server.add_secure_port(f"127.0.0.1:{port}", credentials)
    else:
        server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    print("listening", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    mode, port, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    tls = (sys.argv[4], sys.argv[5]) if mode in ("https", "grpcs") else None
    (serve_http if mode in ("http", "https") else serve_grpc)(port, out, tls)
