// Test-only bridge to Eclipse Tahu's JavaScript Sparkplug B codec (npm sparkplug-payload).
// stdin: {"decode": [base64, ...], "encode": [payload object, ...]}
// stdout: {"decoded": [payload, ...], "encoded": [base64, ...]}
// 64-bit integers (protobufjs Long) are printed as decimal strings so nothing is rounded.
"use strict";
const sparkplug = require("sparkplug-payload").get("spBv1.0");
const Long = require("long");

function plain(value) {
  if (Long.isLong(value)) return value.toString();
  if (Buffer.isBuffer(value) || value instanceof Uint8Array) return Buffer.from(value).toString("base64");
  if (Array.isArray(value)) return value.map(plain);
  if (value !== null && typeof value === "object") {
    const out = {};
    for (const [k, v] of Object.entries(value)) out[k] = plain(v);
    return out;
  }
  return value;
}

let input = "";
process.stdin.on("data", (chunk) => (input += chunk));
process.stdin.on("end", () => {
  const req = JSON.parse(input);
  const decoded = (req.decode || []).map((b64) => plain(sparkplug.decodePayload(Buffer.from(b64, "base64"))));
  const encoded = (req.encode || []).map((p) => Buffer.from(sparkplug.encodePayload(p)).toString("base64"));
  process.stdout.write(JSON.stringify({ decoded, encoded }));
});
