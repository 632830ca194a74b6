// One cold symmetric-key registration with the official Azure IoT Node device SDK, for
// provisioning-core/benches/provision_cold.rs. Environment: DPS_HOST, DPS_PORT, ID_SCOPE,
// REG_ID, KEY (base64), NODE_EXTRA_CA_CERTS (the emulator's dev CA) and NODE_PATH pointing at
// dps-emulator/node-tests/node_modules. The transport takes a host name only, so an agent
// connects to DPS_PORT (TLS still checks DPS_HOST).
'use strict';
const https = require('https');
const { Http: HttpBase } = require('azure-iot-http-base');
const { ProvisioningDeviceClient } = require('azure-iot-provisioning-device');
const { Http: DeviceHttpTransport } = require('azure-iot-provisioning-device-http');
const { SymmetricKeySecurityClient } = require('azure-iot-security-symmetric-key');

const port = Number(process.env.DPS_PORT);
class FixedPortAgent extends https.Agent {
  createConnection(options, callback) {
    return super.createConnection(Object.assign({}, options, { port }), callback);
  }
}
const base = new HttpBase();
base.setOptions({ http: { agent: new FixedPortAgent({ keepAlive: false }) } });
const client = ProvisioningDeviceClient.create(
  process.env.DPS_HOST,
  process.env.ID_SCOPE,
  new DeviceHttpTransport(base),
  new SymmetricKeySecurityClient(process.env.REG_ID, process.env.KEY),
);
client.register().then(
  (r) => { console.log(JSON.stringify({ assignedHub: r.assignedHub, deviceId: r.deviceId })); },
  (e) => { console.error(e && e.message ? e.message : e); process.exit(1); },
);
