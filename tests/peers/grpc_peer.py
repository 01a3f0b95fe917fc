"""gRPC over TLS with Debian's python3-grpcio (system libssl), bytes in and out (no protobuf):
the service demo.Echo with
  Unary(request)  -> the bytes of DIR/unary
  Stream(request) -> the messages DIR/stream.0, DIR/stream.1, ... in order
  Fail(request)   -> status NOT_FOUND with the message of DIR/fail_message
Usage:
  grpc_peer.py server PORT CERT KEY DIR      (prints "listening")
  grpc_peer.py client PORT CERT REQUEST_FILE OUT_DIR
     calls Unary, Stream and Fail on one channel with the bytes of REQUEST_FILE; writes what
     it received to OUT_DIR/unary, OUT_DIR/stream.N, and the failure to OUT_DIR/fail"""
import os
import sys
import time
from concurrent import futures

import grpc


def read(path):
    with open(path, "rb") as f:
        return f.read()


def server(port, cert, key, directory):
    def unary(request, context):
        return read(os.path.join(directory, "unary"))

    def stream(request, context):
        index = 0
        while os.path.exists(os.path.join(directory, "stream.%d" % index)):
            yield read(os.path.join(directory, "stream.%d" % index))
            index += 1

    def fail(request, context):
        context.abort(grpc.StatusCode.NOT_FOUND, read(os.path.join(directory, "fail_message")).decode())

    handler = grpc.method_handlers_generic_handler(
        "demo.Echo",
        {
            "Unary": grpc.unary_unary_rpc_method_handler(unary),
            "Stream": grpc.unary_stream_rpc_method_handler(stream),
            "Fail": grpc.unary_unary_rpc_method_handler(fail),
        },
    )
    grpc_server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    grpc_server.add_generic_rpc_handlers((handler,))
    credentials = grpc.ssl_server_credentials([(read(key), read(cert))])
    grpc_server.add_secure_port("127.0.0.1:%d" % port, credentials)
    grpc_server.start()
    print("listening", flush=True)
    while True:
        time.sleep(3600)


def client(port, cert, request_file, out_dir):
    credentials = grpc.ssl_channel_credentials(root_certificates=read(cert))
    options = (("grpc.ssl_target_name_override", "localhost"),)
    with grpc.secure_channel("127.0.0.1:%d" % port, credentials, options) as channel:
        request = read(request_file)
        reply = channel.unary_unary("/demo.Echo/Unary")(request, timeout=20)
        with open(os.path.join(out_dir, "unary"), "wb") as f:
            f.write(reply)
        for index, message in enumerate(channel.unary_stream("/demo.Echo/Stream")(request, timeout=20)):
            with open(os.path.join(out_dir, "stream.%d" % index), "wb") as f:
                f.write(message)
        try:
            channel.unary_unary("/demo.Echo/Fail")(request, timeout=20)
            sys.exit("Fail did not fail")
        except grpc.RpcError as error:
            with open(os.path.join(out_dir, "fail"), "w") as f:
                f.write("%s %s" % (error.code().name, error.details()))


if __name__ == "__main__":
    if sys.argv[1] == "server":
        server(int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5])
    else:
        client(int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5])
