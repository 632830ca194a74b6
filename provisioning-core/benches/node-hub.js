// The official Azure IoT Node device client (azure-iot-device + azure-iot-device-mqtt) on the
// emulated hub, for provisioning-core/benches/hub_telemetry.rs: the time of client.open()
// (TLS, CONNECT, CONNACK), then MESSAGES telemetry messages sent one after another, each
// awaited (QoS 1: resolved on its PUBACK). Environment: HUB_HOST, GATEWAY_HOST (where to
// connect; the transport always uses port 8883), DEVICE_ID, KEY (base64), MESSAGES,
// NODE_EXTRA_CA_CERTS (the emulator's dev CA) and NODE_PATH (dps-emulator/node-tests/
// node_modules). Prints {"connectMs", "messagesPerSecond"}.
'use strict';
const { Client, Message } = require('azure-iot-device');
const { Mqtt } = require('azure-iot-device-mqtt');

async function main() {
  const env = (n) => {
    if (!process.env[n]) throw new Error(`environment variable ${n} is required`);
    return process.env[n];
  };
  const cs = `HostName=${env('HUB_HOST')};DeviceId=${env('DEVICE_ID')};SharedAccessKey=${env('KEY')};GatewayHostName=${env('GATEWAY_HOST')}`;
  const client = Client.fromConnectionString(cs, Mqtt);
  const n = Number(env('MESSAGES'));
  let t = process.hrtime.bigint();
  await client.open();
  const connectMs = Number(process.hrtime.bigint() - t) / 1e6;
  t = process.hrtime.bigint();
  for (let i = 0; i < n; i++) {
    const m = new Message(`{"i":${i}}`);
    m.properties.add('bench', 'node');
    await client.sendEvent(m);
  }
  const secs = Number(process.hrtime.bigint() - t) / 1e9;
  await client.close();
  process.stdout.write(JSON.stringify({ connectMs, messagesPerSecond: n / secs }) + '\n');
  process.exit(0);
}

main().catch((e) => {
  process.stderr.write(`node hub bench failed: ${e && e.stack ? e.stack : e}\n`);
  process.exit(1);
});
