"""An HTTPS server that records, per connection, every byte it read and every byte it wrote
(DIR/N.in and DIR/N.out, N counting connections from 0; DIR/N.peer holds the client's
"address:port"): the independent oracle of what a
traced client sent and received. HTTP/1.1 with keep-alive; for each request:
  GET /download/N  -> N bytes of a fixed pattern
  GET /page/N      -> an HTML page of N bytes (text a browser shows and exits after)
  POST             -> reads Content-Length bytes, answers their sha256 (hex)
  anything else    -> "hello " + the path
Usage: recording_server.py PORT CERT KEY DIR. Prints "listening" once ready."""
import hashlib
import itertools
import os
import socket
import ssl
import sys
import threading

PATTERN = bytes(range(251))
counter = itertools.count()


def pattern(size):
    return (PATTERN * (size // len(PATTERN) + 1))[:size]


def page(size):
    head, tail = b"<html><body><pre>", b"</pre></body></html>"
    lines = b"".join(b"line %06d of the page\n" % n for n in range(size // 20 + 1))
    return head + lines[:max(size - len(head) - len(tail), 0)] + tail


def serve(tls, index, directory, peer):
    with open(os.path.join(directory, f"{index}.peer"), "w") as out:
        out.write(f"{peer[0]}:{peer[1]}")
    received = open(os.path.join(directory, f"{index}.in"), "wb")
    sent = open(os.path.join(directory, f"{index}.out"), "wb")
    buffered = b""

    def read_more():
        data = tls.recv(1 << 20)
        received.write(data)
        received.flush()
        return data

    try:
        while True:
            while b"\r\n\r\n" not in buffered:
                data = read_more()
                if not data:
                    return
                buffered += data
            head, _, buffered = buffered.partition(b"\r\n\r\n")
            lines = head.split(b"\r\n")
            method, path = lines[0].split(b" ")[:2]
            headers = {k.lower(): v for k, v in
                       (line.split(b": ", 1) for line in lines[1:] if b": " in line)}
            length = int(headers.get(b"content-length", b"0"))
            while len(buffered) < length:
                data = read_more()
                if not data:
                    return
                buffered += data
            body, buffered = buffered[:length], buffered[length:]
            kind = b"application/octet-stream"
            if path.startswith(b"/download/"):
                answer = pattern(int(path[len(b"/download/"):]))
            elif path.startswith(b"/page/"):
                kind = b"text/html"
                answer = page(int(path[len(b"/page/"):]))
            elif method == b"POST":
                answer = hashlib.sha256(body).hexdigest().encode()
            else:
                answer = b"hello " + path
            response = (b"HTTP/1.1 200 OK\r\nContent-Type: " + kind + b"\r\n"
                        b"Content-Length: " + str(len(answer)).encode() + b"\r\n\r\n" + answer)
            tls.sendall(response)
            sent.write(response)
            sent.flush()
            if headers.get(b"connection", b"").lower() == b"close":
                return
    except (ConnectionError, ssl.SSLError, OSError):
        return
    finally:
        received.close()
        sent.close()
        try:
            tls.close()
        except OSError:
            pass


def main():
    port, cert, key, directory = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", int(port)))
    listener.listen(64)
    print("listening", flush=True)
    while True:
        connection, peer = listener.accept()
        try:
            tls = context.wrap_socket(connection, server_side=True)
        except (ssl.SSLError, OSError):
            connection.close()
            continue
        threading.Thread(target=serve, args=(tls, next(counter), directory, peer), daemon=True).start()


if __name__ == "__main__":
    main()
