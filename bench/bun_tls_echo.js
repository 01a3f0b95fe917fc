// A TLS echo inside one Bun process, for scripts/bench (`--only stripped`): a node:tls server
// and client on loopback; COUNT times the client writes SIZE bytes and waits for them to come
// back. Bun's TLS is its stripped BoringSSL: every round is SSL_write and SSL_read (inlined:
// SSL_peek stands in) on both sides. Prints {"seconds", "count", "size"}: the loop's own time.
// Usage: bun bun_tls_echo.js CERT KEY SIZE COUNT
import tls from "node:tls";
import { readFileSync } from "node:fs";

const [cert, key, sizeText, countText] = process.argv.slice(2);
const size = Number(sizeText);
const count = Number(countText);
const server = tls.createServer({ cert: readFileSync(cert), key: readFileSync(key) }, (socket) => {
  socket.on("data", (data) => socket.write(data));
});
server.listen(0, "127.0.0.1", () => {
  const options = { port: server.address().port, host: "127.0.0.1", rejectUnauthorized: false };
  const client = tls.connect(options, () => {
    const message = Buffer.alloc(size, 120);
    let round = 0;
    let pending = 0;
    let started = 0;
    client.on("data", (data) => {
      pending += data.length;
      if (pending < size) return;
      pending -= size;
      round += 1;
      if (round < count) {
        client.write(message);
        return;
      }
      const seconds = (performance.now() - started) / 1000;
      console.log(JSON.stringify({ seconds, count, size }));
      process.exit(0);
    });
    started = performance.now();
    client.write(message);
  });
});
