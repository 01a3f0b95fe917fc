// node's https server (OpenSSL linked into node, memory BIOs: libuv does the socket I/O).
// Answers each request with a body the test can predict and closes the connection.
// Usage: node https_server.js PORT CERT KEY. Prints "ready" once listening.
const https = require('https');
const fs = require('fs');
const [port, cert, key] = process.argv.slice(2);
const server = https.createServer({ cert: fs.readFileSync(cert), key: fs.readFileSync(key) },
  (req, res) => {
    const body = `node answer for ${req.url}\n`;
    res.sendDate = false;
    res.writeHead(200, { 'Content-Length': Buffer.byteLength(body), 'Connection': 'close' });
    res.end(body);
  });
server.listen(Number(port), '127.0.0.1', () => console.log('ready'));
