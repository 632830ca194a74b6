// Drives the official Azure IoT Node provisioning client over MQTT
// (azure-iot-provisioning-device-mqtt) against the hsmkit DPS emulator's MQTT listener.
// Run by dps-emulator/tests/sdk_mqtt.rs, which starts the emulator with MQTT on 127.0.0.1:8883
// (the transport always connects to port 8883 of the host it is given) and passes:
//   DPS_HOST, ID_SCOPE, SYM_REG_ID, SYM_KEY, GROUP_REG_ID, GROUP_KEY, X509_REG_ID,
//   X509_CERT_FILE, X509_KEY_FILE
// and NODE_EXTRA_CA_CERTS (the emulator's dev CA).
// Prints one JSON object with every result on stdout; exits non-zero on the first failure.
'use strict';

const fs = require('fs');
const crypto = require('crypto');
const { ProvisioningDeviceClient } = require('azure-iot-provisioning-device');
const { Mqtt } = require('azure-iot-provisioning-device-mqtt');
const { SymmetricKeySecurityClient } = require('azure-iot-security-symmetric-key');
const { X509Security } = require('azure-iot-security-x509');

function need(name) {
  const v = process.env[name];
  if (!v) throw new Error(`environment variable ${name} is required`);
  return v;
}

async function register(security, payload) {
  const client = ProvisioningDeviceClient.create(need('DPS_HOST'), need('ID_SCOPE'), new Mqtt(), security);
  if (payload) client.setProvisioningPayload(payload);
  return client.register();
}

async function main() {
  const out = {};
  out.symmetric = await register(new SymmetricKeySecurityClient(need('SYM_REG_ID'), need('SYM_KEY')), { model: 'node-mqtt' });

  const groupRegId = need('GROUP_REG_ID');
  const derived = crypto.createHmac('sha256', Buffer.from(need('GROUP_KEY'), 'base64')).update(groupRegId).digest('base64');
  out.group = await register(new SymmetricKeySecurityClient(groupRegId, derived));

  out.x509 = await register(new X509Security(need('X509_REG_ID'), {
    cert: fs.readFileSync(need('X509_CERT_FILE'), 'utf8'),
    key: fs.readFileSync(need('X509_KEY_FILE'), 'utf8'),
  }));

  // A wrong key must be refused by the emulator, and the SDK must report it.
  try {
    await register(new SymmetricKeySecurityClient(need('SYM_REG_ID'), Buffer.from('not the key, not the key!!').toString('base64')));
    out.wrongKey = 'accepted';
  } catch (err) {
    out.wrongKey = 'rejected';
  }
  process.stdout.write(JSON.stringify(out) + '\n');
  process.exit(0);
}

main().catch((err) => {
  process.stderr.write(`official MQTT client run failed: ${err && err.stack ? err.stack : err}\n`);
  process.exit(1);
});
