"""WebSocket over TLS with python3-websockets (Debian's 10.x), client or server. Each side logs
every data message it sent and received, in order, as JSON lines {"dir": "sent"|"received",
"kind": "text"|"binary", "b64": ...}: the oracle of tests/http.rs.

server PORT CERT KEY LOG: for each message received, sends back "echo " + its length as text,
then a message of three fragments (text), then a binary message of 3000 bytes.
client PORT LOG COMPRESSION(none|deflate): sends a text, a binary message, a fragmented text
(three fragments) and a 100 kB text, reading the server's three answers to each; then closes.
"""
import asyncio
import base64
import json
import ssl
import sys

import websockets


def logger(path):
    out = open(path, "w")

    def log(direction, message):
        kind = "text" if isinstance(message, str) else "binary"
        data = message.encode() if isinstance(message, str) else bytes(message)
        out.write(json.dumps({"dir": direction, "kind": kind, "b64": base64.b64encode(data).decode()}) + "\n")
        out.flush()

    return log


async def server(port, cert, key, path):
    log = logger(path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)

    async def handler(ws, *_):
        async for message in ws:
            log("received", message)
            answers = [
                f"echo {len(message)}",
                ["frag", "ment", "ed from the server"],
                bytes((i * 7) % 256 for i in range(3000)),
            ]
            for answer in answers:
                await ws.send(answer)
                log("sent", "".join(answer) if isinstance(answer, list) else answer)

    async with websockets.serve(handler, "127.0.0.1", port, ssl=context, compression="deflate"):
        print("ready", flush=True)
        await asyncio.Future()


async def client(port, path, compression):
    log = logger(path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    messages = [
        "hello, websocket",
        bytes(range(256)) * 4,
        ["first fragment, ", "second fragment, ", "third"],
        "".join(f"line {i}\n" for i in range(12000)),
    ]
    async with websockets.connect(f"wss://127.0.0.1:{port}/chat", ssl=context,
                                  compression=None if compression == "none" else "deflate",
                                  max_size=None) as ws:
        for message in messages:
            await ws.send(message)
            log("sent", "".join(message) if isinstance(message, list) else message)
            for _ in range(3):
                log("received", await ws.recv())


if __name__ == "__main__":
    if sys.argv[1] == "server":
        asyncio.run(server(int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]))
    else:
        asyncio.run(client(int(sys.argv[2]), sys.argv[3], sys.argv[4]))
