// node's built-in http2 client: ONE session to BASE, the paths of the first list requested
// concurrently (all streams open at once), each body written to OUT_DIR/<index>.
// With --hold: prints "phase1 done" after the first list, waits for a line on stdin, then
// requests the second list (comma-separated) on the same session the same way.
// Usage: node h2_client.js BASE OUT_DIR PATHS1 [--hold PATHS2]
const http2 = require("http2");
const fs = require("fs");
const path = require("path");

const [base, outDir, first, hold, second] = process.argv.slice(2);
const session = http2.connect(base, { rejectUnauthorized: false });

function fetchAll(paths, offset) {
  return Promise.all(
    paths.map(
      (p, i) =>
        new Promise((resolve, reject) => {
          const request = session.request({
            ":path": p,
            "x-probectl-test": "phase-header",
            ...(offset > 0 ? { "x-late": "after-join" } : {}),
          });
          const chunks = [];
          request.on("response", (headers) => {
            if (headers[":status"] !== 200) reject(new Error(`status ${headers[":status"]}`));
          });
          request.on("data", (chunk) => chunks.push(chunk));
          request.on("end", () => {
            fs.writeFileSync(path.join(outDir, String(offset + i)), Buffer.concat(chunks));
            resolve();
          });
          request.on("error", reject);
          request.end();
        }),
    ),
  );
}

(async () => {
  const paths = first.split(",");
  await fetchAll(paths, 0);
  if (hold === "--hold") {
    console.log("phase1 done");
    await new Promise((resolve) => process.stdin.once("data", resolve));
    await fetchAll(second.split(","), paths.length);
  }
  session.close();
})().catch((error) => {
  console.error(error);
  process.exit(1);
});
