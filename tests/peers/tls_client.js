// A TLS client on node's statically linked OpenSSL: sends the request file's bytes, writes what
// it received until the server closed to the output file. An optional fifth argument delays
// the connection by that many milliseconds, or, when it is "stdin", until a line on stdin.
const tls = require('tls');
const fs = require('fs');
const [host, port, requestFile, outFile, delayMs] = process.argv.slice(2);
const request = fs.readFileSync(requestFile);
const chunks = [];
const connect = () => {
  const socket = tls.connect({ host, port: Number(port), rejectUnauthorized: false }, () => {
    socket.write(request);
  });
  socket.on('data', (data) => chunks.push(data));
  socket.on('end', () => {
    fs.writeFileSync(outFile, Buffer.concat(chunks));
  });
  socket.on('error', (error) => {
    console.error(error);
    process.exit(1);
  });
};
if (delayMs === 'stdin') {
  process.stdin.once('data', () => {
    process.stdin.pause();
    connect();
  });
} else {
  setTimeout(connect, Number(delayMs || 0));
}
