"""An HTTPS/1.1 keep-alive server (Python's http.server) that serves exactly what the test gave
it: GET /files/NAME answers the bytes of DIR/NAME with a Content-Length; GET /chunked/NAME
answers them chunked (1000-byte chunks, then a trailer "X-Trailer: done"); GET
/encoded/CODING/NAME answers them with "Content-Encoding: CODING" (the file is already coded);
POST answers the sha256 (hex) of the body. Usage: http_server.py PORT CERT KEY DIR"""
import hashlib
import http.server
import os
import ssl
import sys


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        kind, _, name = self.path.lstrip("/").partition("/")
        coding = None
        if kind == "encoded":
            coding, _, name = name.partition("/")
        with open(os.path.join(DIR, os.path.basename(name)), "rb") as f:
            body = f.read()
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        if coding:
            self.send_header("Content-Encoding", coding)
        if kind == "chunked":
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("Trailer", "X-Trailer")
            self.end_headers()
            for at in range(0, len(body), 1000):
                chunk = body[at:at + 1000]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            self.wfile.write(b"0\r\nX-Trailer: done\r\n\r\n")
        else:
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        answer = hashlib.sha256(body).hexdigest().encode()
        self.send_response(201)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)


if __name__ == "__main__":
    port, cert, key, DIR = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    server.serve_forever()
