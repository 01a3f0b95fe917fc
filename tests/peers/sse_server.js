// A Server-Sent-Events server over TLS, HTTP/2 and HTTP/1.1 (ALPN; node's http2 with
// allowHTTP1: HTTP/1.1 responses are chunked). GET /sse?n=N&gap=MS answers N events, one every
// MS milliseconds ("id: I\ndata: event I of N\n\n"), and logs the wall-clock time at which it
// wrote each one, as JSON lines {"event": I, "ms": epoch milliseconds}, to LOG: the oracle of
// the live output test.
// Usage: node sse_server.js PORT CERT KEY LOG. Prints "ready" once listening.
const http2 = require('http2');
const fs = require('fs');
const [port, cert, key, log] = process.argv.slice(2);
const server = http2.createSecureServer(
  { cert: fs.readFileSync(cert), key: fs.readFileSync(key), allowHTTP1: true },
  (req, res) => {
    const url = new URL(req.url, 'https://localhost');
    const n = Number(url.searchParams.get('n') || 10);
    const gap = Number(url.searchParams.get('gap') || 300);
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
    let i = 0;
    const next = () => {
      i += 1;
      res.write(`id: ${i}\ndata: event ${i} of ${n}\n\n`);
      fs.appendFileSync(log, JSON.stringify({ event: i, ms: Date.now() }) + '\n');
      if (i < n) {
        setTimeout(next, gap);
      } else {
        res.end();
      }
    };
    setTimeout(next, gap);
  });
server.listen(Number(port), '127.0.0.1', () => console.log('ready'));
