"""A TLS server with exactly known behaviour. For each connection it reads an HTTP request and
answers, then closes:
  POST with Content-Length  -> reads the body, answers its sha256 (hex)
  GET /download/N           -> answers N bytes of a fixed pattern
  anything else             -> answers "you sent N bytes: " + the request reversed
Forks a child per connection with --fork. Prints "listening" once ready."""
import hashlib
import os
import signal
import socket
import ssl
import sys


PATTERN = bytes(range(251))


def pattern(size):
    return (PATTERN * (size // len(PATTERN) + 1))[:size]


def answer(tls):
    request = bytearray()
    while b"\r\n\r\n" not in request:
        data = tls.recv(65536)
        if not data:
            return
        request += data
    head, _, body = bytes(request).partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    method, path = lines[0].split(b" ")[:2]
    headers = dict(line.split(b": ", 1) for line in lines[1:] if b": " in line)
    length = int(headers.get(b"Content-Length", b"0"))
    if method == b"POST":
        body = bytearray(body)
        while len(body) < length:
            data = tls.recv(1 << 20)
            if not data:
                return
            body += data
        payload = hashlib.sha256(body).hexdigest().encode()
    elif path.startswith(b"/download/"):
        payload = pattern(int(path.rsplit(b"/", 1)[1]))
    else:
        payload = b"you sent " + str(len(request)).encode() + b" bytes: " + bytes(request[::-1])
    tls.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: " + str(len(payload)).encode() + b"\r\n\r\n" + payload)


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
