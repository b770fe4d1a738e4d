// Test-only: a second OPC-UA server implementation (node-opcua), so the gateway's OPC-UA driver is
// checked against a server this project did not write (tests/support/opcua_node.py starts it).
//
//   node server.js '{"port": 4840, "pki": "<dir>", "period": 100, "minPublishingInterval": 500}'
//
// Address space, namespace 1 (the server's own), string NodeIds under Objects/plant:
//   ns=1;s=steady_1 .. steady_5   Double 1.5, 2.5, ... written once: never change
//   ns=1;s=ramp                   Double, +1 every `period` ms
//   ns=1;s=uncertain              Double 21.5 with UncertainLastUsableValue
//   ns=1;s=out_of_range           Double 999 with BadOutOfRange
// Prints one JSON line {"ready": port} on stdout when listening; exits when stdin closes, so a
// test process that dies never leaves a server behind.
"use strict";
const os = require("os");
const path = require("path");
const { OPCUAServer, Subscription } = require("node-opcua-server");
const { OPCUACertificateManager } = require("node-opcua-certificate-manager");
const { nodesets } = require("node-opcua-nodesets");
const { Variant, DataType } = require("node-opcua-variant");
const { StatusCodes } = require("node-opcua-status-code");

const options = JSON.parse(process.argv[2] || "{}");
const port = options.port || 4840;
const pki = options.pki || path.join(os.tmpdir(), "fieldwatch-node-opcua-pki");
const period = options.period || 100;
// A server that cannot publish faster than this revises a shorter requested interval up to it.
if (options.minPublishingInterval) Subscription.minimumPublishingInterval = options.minPublishingInterval;

function double(value) {
  return new Variant({ dataType: DataType.Double, value });
}

async function main() {
  const certificateManager = new OPCUACertificateManager({
    rootFolder: pki,
    automaticallyAcceptUnknownCertificate: true,
  });
  const server = new OPCUAServer({
    port,
    hostname: "127.0.0.1",
    nodeset_filename: [nodesets.standard],
    serverCertificateManager: certificateManager,
    userCertificateManager: certificateManager,
    buildInfo: { productName: "fieldwatch node-opcua test server" },
  });
  await server.initialize();
  const addressSpace = server.engine.addressSpace;
  const ns = addressSpace.getOwnNamespace();
  const plant = ns.addObject({ organizedBy: addressSpace.rootFolder.objects, browseName: "plant", nodeId: "s=plant" });
  const variable = (name) =>
    ns.addVariable({ componentOf: plant, browseName: name, nodeId: `s=${name}`, dataType: "Double" });
  const stamp = new Date();
  for (let i = 1; i <= 5; i++) {
    variable(`steady_${i}`).setValueFromSource(double(i + 0.5), StatusCodes.Good, stamp);
  }
  variable("uncertain").setValueFromSource(double(21.5), StatusCodes.UncertainLastUsableValue, stamp);
  variable("out_of_range").setValueFromSource(double(999), StatusCodes.BadOutOfRange, stamp);
  const ramp = variable("ramp");
  let n = 0;
  ramp.setValueFromSource(double(n), StatusCodes.Good, new Date());
  const timer = setInterval(() => ramp.setValueFromSource(double(++n), StatusCodes.Good, new Date()), period);

  await server.start();
  process.stdout.write(JSON.stringify({ ready: server.endpoints[0].port }) + "\n");
  const stop = async () => {
    clearInterval(timer);
    await server.shutdown(0);
    process.exit(0);
  };
  process.stdin.on("end", stop);
  process.stdin.resume();
  process.on("SIGTERM", stop);
}

main().catch((err) => {
  process.stderr.write(`${err && err.stack ? err.stack : err}\n`);
  process.exit(1);
});
