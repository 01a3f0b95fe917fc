// A fetch() client for Bun (tests/stripped.rs): on one keep-alive connection to
// tests/peers/recording_server.py, GET /download/SIZE, then POST the file BODY to /upload.
// Prints what it received: the download's length and the server's answer to the POST (the
// body's sha256), for running it by hand (tests/stripped.rs checks the server's recording).
// Usage: NODE_TLS_REJECT_UNAUTHORIZED=0 bun fetch_client.js PORT SIZE BODY
import { readFileSync } from "node:fs";

const [port, size, bodyFile] = process.argv.slice(2);
const base = `https://127.0.0.1:${port}`;
const download = await fetch(`${base}/download/${size}`);
const got = new Uint8Array(await download.arrayBuffer());
const body = readFileSync(bodyFile);
const upload = await fetch(`${base}/upload`, { method: "POST", body });
const answer = await upload.text();
console.log(JSON.stringify({ download: got.length, answer }));
