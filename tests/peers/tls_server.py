"""A TLS server with exactly known behaviour: for each connection, reads a request up to the
blank line, answers "HTTP/1.0 200 OK" with a body derived from the request, closes. Forks a
child per connection with --fork. Prints "listening" once ready."""
import os
import signal
import socket
import ssl
import sys


def answer(tls):
    request = bytearray()
    while b"\r\n\r\n" not in request:
        data = tls.recv(65536)
        if not data:
            return
        request += data
    body = b"you sent " + str(len(request)).encode() + b" bytes: " + bytes(request[::-1])
    tls.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


def main():
    port, cert, key = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    fork = "--fork" in sys.argv
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    with socket.create_server(("127.0.0.1", port)) as listener:
        print("listening", flush=True)
        while True:
            connection, _ = listener.accept()
            if fork and os.fork() != 0:
                connection.close()
                continue
            try:
                with context.wrap_socket(connection, server_side=True) as tls:
                    answer(tls)
            except (ssl.SSLError, OSError):
                pass  # e.g. a plain TCP probe of the port
            if fork:
                os._exit(0)


if __name__ == "__main__":
    main()
