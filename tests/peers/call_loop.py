"""The per-call benchmark of scripts/kernels (PROBECTL_KERNEL_BENCH=1): one TLS connection to
host:port, then N writes of 64 bytes (N SSL_write calls), timed; prints the seconds the writes
took. The server only reads (`openssl s_server -quiet`)."""
import socket
import ssl
import sys
import time


def main():
    host, port, calls = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection((host, port)) as raw:
        with context.wrap_socket(raw) as tls:
            payload = b"x" * 63 + b"\n"
            started = time.perf_counter()
            for _ in range(calls):
                tls.sendall(payload)
            elapsed = time.perf_counter() - started
    print(f"{elapsed:.6f}")


main()
