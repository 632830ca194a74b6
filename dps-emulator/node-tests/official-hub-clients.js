// Drives the official Azure IoT Node device client (azure-iot-device with the
// azure-iot-device-mqtt transport) against the hsmkit DPS emulator's emulated IoT hub.
// Run by dps-emulator/tests/sdk_hub.rs, which provisions the devices through the emulator's
// DPS, queues one cloud-to-device message for each, starts the emulator's MQTT listener on
// 127.0.0.1:8883 (the transport always connects to port 8883 of its host) and passes:
//   HUB_HOST (the assigned hub), GATEWAY_HOST (where to connect: 127.0.0.1),
//   SYM_DEVICE_ID, SYM_KEY, X509_DEVICE_ID, X509_CERT_FILE, X509_KEY_FILE
// and NODE_EXTRA_CA_CERTS (the emulator's dev CA).
// The symmetric-key device connects with a connection string whose GatewayHostName names the
// emulator (the SDK's way to reach a hub through another host: the MQTT user name and the SAS
// still name HUB_HOST). The SDK's X.509 provider has no gateway setting, so the X.509 device's
// provider adds it to the credentials the transport reads.
// Each device sends one telemetry message with properties, reads its twin, reports a
// property and receives its cloud-to-device message. Prints one JSON object on stdout; exits
// non-zero on the first failure.
'use strict';

const fs = require('fs');
const { Client, Message, X509AuthenticationProvider } = require('azure-iot-device');
const { Mqtt } = require('azure-iot-device-mqtt');

function need(name) {
  const v = process.env[name];
  if (!v) throw new Error(`environment variable ${name} is required`);
  return v;
}

function within(ms, what, promise) {
  return Promise.race([
    promise,
    new Promise((_, reject) => setTimeout(() => reject(new Error(`${what}: nothing within ${ms} ms`)), ms)),
  ]);
}

/// X.509 credentials that also name the gateway to connect to.
class GatewayX509Provider extends X509AuthenticationProvider {
  constructor(deviceId, hub, x509, gateway) {
    super({ deviceId, host: hub, x509 });
    this._gateway = gateway;
  }

  getDeviceCredentials(callback) {
    super.getDeviceCredentials((err, creds) => {
      if (creds) creds.gatewayHostName = this._gateway;
      callback(err, creds);
    });
  }
}

async function exercise(client, label) {
  const c2d = new Promise((resolve) => {
    client.on('message', (msg) => {
      client.complete(msg, () => {});
      const properties = {};
      for (const p of msg.properties.propertyList) properties[p.key] = p.value;
      resolve({ body: msg.data.toString(), properties, messageId: msg.messageId });
    });
  });
  await within(20000, `${label} open`, client.open());
  const m = new Message(JSON.stringify({ from: label }));
  m.properties.add('source', `node-${label}`);
  m.contentType = 'application/json';
  m.contentEncoding = 'utf-8';
  await within(20000, `${label} sendEvent`, client.sendEvent(m));
  const twin = await within(20000, `${label} getTwin`, client.getTwin());
  const desired = JSON.parse(JSON.stringify(twin.properties.desired));
  await within(20000, `${label} report`, new Promise((resolve, reject) => {
    twin.properties.reported.update({ node: label }, (err) => (err ? reject(err) : resolve()));
  }));
  const received = await within(20000, `${label} cloud-to-device`, c2d);
  await client.close();
  return { desired, c2d: received };
}

async function main() {
  const hub = need('HUB_HOST');
  const gateway = need('GATEWAY_HOST');
  const out = {};
  const cs = `HostName=${hub};DeviceId=${need('SYM_DEVICE_ID')};SharedAccessKey=${need('SYM_KEY')};GatewayHostName=${gateway}`;
  out.symmetric = await exercise(Client.fromConnectionString(cs, Mqtt), 'symmetric');

  const x509 = {
    cert: fs.readFileSync(need('X509_CERT_FILE'), 'utf8'),
    key: fs.readFileSync(need('X509_KEY_FILE'), 'utf8'),
  };
  const provider = new GatewayX509Provider(need('X509_DEVICE_ID'), hub, x509, gateway);
  out.x509 = await exercise(Client.fromAuthenticationProvider(provider, Mqtt), 'x509');

  // A wrong key must be refused by the emulated hub, and the SDK must report it.
  const wrong = `HostName=${hub};DeviceId=${need('SYM_DEVICE_ID')};SharedAccessKey=${Buffer.from('not the key, not the key!!').toString('base64')};GatewayHostName=${gateway}`;
  try {
    const c = Client.fromConnectionString(wrong, Mqtt);
    await within(20000, 'wrong key open', c.open());
    out.wrongKey = 'accepted';
    await c.close();
  } catch (err) {
    out.wrongKey = 'rejected';
  }
  process.stdout.write(JSON.stringify(out) + '\n');
  process.exit(0);
}

main().catch((err) => {
  process.stderr.write(`official hub client run failed: ${err && err.stack ? err.stack : err}\n`);
  process.exit(1);
});
