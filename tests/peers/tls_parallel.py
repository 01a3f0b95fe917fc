"""N concurrent TLS connections from one process, one thread each. Every thread connects, waits
until all are connected, sends "GET /conn-<i>/<tag> HTTP/1.0" and reads the answer until the
server closes. Prints one JSON object: for each i, the local port it used and the response."""
import base64
import json
import socket
import ssl
import sys
import threading


def main():
    host, port, count, tag = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    barrier = threading.Barrier(count)
    results = {}

    def run(i):
        with socket.create_connection((host, port)) as raw:
            with context.wrap_socket(raw, server_hostname=host) as tls:
                local_port = tls.getsockname()[1]
                barrier.wait()
                request = f"GET /conn-{i}/{tag} HTTP/1.0\r\n\r\n".encode()
                tls.sendall(request)
                received = bytearray()
                while True:
                    try:
                        data = tls.recv(65536)
                    except (ssl.SSLZeroReturnError, ConnectionResetError):
                        break
                    if not data:
                        break
                    received += data
        results[i] = {
            "port": local_port,
            "request_b64": base64.b64encode(request).decode(),
            "response_b64": base64.b64encode(bytes(received)).decode(),
        }

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print(json.dumps(results))


if __name__ == "__main__":
    main()
