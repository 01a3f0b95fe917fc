// A WebSocket client in node (its built-in WebSocket, undici's, behind --experimental-websocket
// in node 20; TLS by node's own OpenSSL): the counterpart of ws_peer.py's client for
// tests/http.rs. Sends a text, a binary message, a text and a 100 kB text (node's API sends
// each whole: no fragments, no compression offered), reads the server's three answers to
// each, and logs every data message as ws_peer.py does:
// {"dir": "sent"|"received", "kind": "text"|"binary", "b64": ...}.
// Usage: node --experimental-websocket ws_client.js PORT LOG
const fs = require("fs");

const [port, path] = process.argv.slice(2);
const out = fs.openSync(path, "w");
const log = (dir, message) => {
  const text = typeof message === "string";
  const data = text ? Buffer.from(message, "utf8") : Buffer.from(message);
  fs.writeSync(out, JSON.stringify({ dir, kind: text ? "text" : "binary", b64: data.toString("base64") }) + "\n");
};

const binary = new Uint8Array(1024).map((_, i) => i % 256);
let big = "";
for (let i = 0; i < 12000; i++) big += `line ${i}\n`;
const messages = ["hello, websocket", binary, "first fragment, second fragment, third", big];

const ws = new WebSocket(`wss://127.0.0.1:${port}/chat`);
ws.binaryType = "arraybuffer";
let next = 0;
let answers = 0;
const send = () => {
  const message = messages[next++];
  ws.send(message);
  log("sent", message);
};
ws.onopen = send;
ws.onmessage = (event) => {
  log("received", typeof event.data === "string" ? event.data : new Uint8Array(event.data));
  if (++answers % 3 === 0) {
    if (next < messages.length) send();
    else ws.close();
  }
};
ws.onclose = () => process.exit(answers === 3 * messages.length ? 0 : 1);
ws.onerror = (error) => {
  console.error(error.message || error);
  process.exit(1);
};
