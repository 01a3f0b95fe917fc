"""Python http.client on ONE kept-alive HTTPS connection: GET /files/small, POST of the bytes
of BODY_FILE to /upload, GET /files/big, GET /chunked/big. Checks every status and writes the
bodies it received to OUT_DIR/{small,upload,big,chunked}. Usage: http_client.py PORT BODY_FILE OUT_DIR"""
import http.client
import os
import ssl
import sys

port, body_file, out_dir = int(sys.argv[1]), sys.argv[2], sys.argv[3]
context = ssl._create_unverified_context()
connection = http.client.HTTPSConnection("127.0.0.1", port, context=context)
with open(body_file, "rb") as f:
    upload = f.read()
requests = [
    ("small", "GET", "/files/small", None),
    ("upload", "POST", "/upload", upload),
    ("big", "GET", "/files/big", None),
    ("chunked", "GET", "/chunked/big", None),
]
for name, method, path, body in requests:
    connection.request(method, path, body=body, headers={"User-Agent": "probectl-test"})
    response = connection.getresponse()
    data = response.read()
    assert response.status in (200, 201), response.status
    with open(os.path.join(out_dir, name), "wb") as f:
        f.write(data)
connection.close()
