"""An asyncio HTTPS server (Python's SSLObject over memory BIOs: the library never sees a
socket): answers each request with a body the test can predict, then closes the connection.
Usage: async_server.py PORT CERT KEY. Prints "ready" once listening."""
import asyncio
import ssl
import sys


def response_for(path: bytes) -> bytes:
    body = b"asyncio answer for " + path + b"\n"
    head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
    return head + body


async def handle(reader, writer):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await reader.read(65536)
        if not chunk:
            break
        data += chunk
    path = data.split(b" ")[1] if data.count(b" ") >= 2 else b"?"
    writer.write(response_for(path))
    await writer.drain()
    writer.close()
    try:
        await writer.wait_closed()
    except (ConnectionError, ssl.SSLError):
        pass


async def main():
    port, cert, key = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = await asyncio.start_server(handle, "127.0.0.1", port, ssl=context)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


asyncio.run(main())
