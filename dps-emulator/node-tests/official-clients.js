// Drives the official Azure IoT Node SDK clients against the hsmkit DPS emulator.
// Run by dps-emulator/tests/node_clients.rs, which starts the emulator and passes:
//   DPS_HOST, DPS_PORT, ID_SCOPE, SERVICE_CONNECTION_STRING, SYM_REG_ID, SYM_KEY,
//   GROUP_ID, GROUP_KEY, GROUP_REG_ID, X509_REG_ID, X509_CERT_FILE, X509_KEY_FILE
// and NODE_EXTRA_CA_CERTS (the emulator's dev CA).
// The SDK's HTTP transports take a host name and always use port 443; instead of binding 443 we
// hand them an HTTP base whose agent connects to DPS_PORT (TLS name checks still use DPS_HOST).
// Prints one JSON object with every result on stdout; exits non-zero on the first failure.
'use strict';

const https = require('https');
const fs = require('fs');
const crypto = require('crypto');
const { Http: HttpBase, RestApiClient } = require('azure-iot-http-base');
const { ProvisioningServiceClient } = require('azure-iot-provisioning-service');
const { ConnectionString, SharedAccessSignature } = require('azure-iot-common');
const { ProvisioningDeviceClient } = require('azure-iot-provisioning-device');
const { Http: DeviceHttpTransport } = require('azure-iot-provisioning-device-http');
const { SymmetricKeySecurityClient } = require('azure-iot-security-symmetric-key');
const { X509Security } = require('azure-iot-security-x509');

function need(name) {
  const v = process.env[name];
  if (!v) throw new Error(`environment variable ${name} is required`);
  return v;
}

const host = need('DPS_HOST');
const port = Number(need('DPS_PORT'));

class FixedPortAgent extends https.Agent {
  createConnection(options, callback) {
    return super.createConnection(Object.assign({}, options, { port }), callback);
  }
}

function httpBase() {
  const base = new HttpBase();
  base.setOptions({ http: { agent: new FixedPortAgent({ keepAlive: false }) } });
  return base;
}

function serviceClient() {
  const cn = ConnectionString.parse(need('SERVICE_CONNECTION_STRING'));
  const config = {
    host: cn.HostName,
    sharedAccessSignature: SharedAccessSignature.create(cn.HostName, cn.SharedAccessKeyName, cn.SharedAccessKey, Date.now()),
  };
  return new ProvisioningServiceClient(config, new RestApiClient(config, 'hsmkit-node-tests', httpBase()));
}

async function register(security) {
  const client = ProvisioningDeviceClient.create(host, need('ID_SCOPE'), new DeviceHttpTransport(httpBase()), security);
  return client.register();
}

async function main() {
  const out = {};
  const service = serviceClient();
  const symId = need('SYM_REG_ID');
  const symKey = need('SYM_KEY');
  const created = await service.createOrUpdateIndividualEnrollment({
    registrationId: symId,
    attestation: { type: 'symmetricKey', symmetricKey: { primaryKey: symKey, secondaryKey: symKey } },
    provisioningStatus: 'enabled',
    initialTwin: { tags: { createdBy: 'node-service-sdk' }, properties: { desired: { interval: 30 } } },
  });
  out.serviceCreate = created.responseBody;
  out.serviceGet = (await service.getIndividualEnrollment(symId)).responseBody;
  const groupId = need('GROUP_ID');
  const groupKey = need('GROUP_KEY');
  out.serviceGroup = (await service.createOrUpdateEnrollmentGroup({
    enrollmentGroupId: groupId,
    attestation: { type: 'symmetricKey', symmetricKey: { primaryKey: groupKey, secondaryKey: groupKey } },
  })).responseBody;

  out.symmetric = await register(new SymmetricKeySecurityClient(symId, symKey));

  const groupRegId = need('GROUP_REG_ID');
  const derived = crypto.createHmac('sha256', Buffer.from(groupKey, 'base64')).update(groupRegId).digest('base64');
  out.group = await register(new SymmetricKeySecurityClient(groupRegId, derived));

  out.x509 = await register(new X509Security(need('X509_REG_ID'), {
    cert: fs.readFileSync(need('X509_CERT_FILE'), 'utf8'),
    key: fs.readFileSync(need('X509_KEY_FILE'), 'utf8'),
  }));

  // Custom allocation (issue 19): an enrollment created by the service SDK with
  // allocationPolicy custom and the test's webhook; the device sends a payload, the webhook
  // (run by the Rust test) answers the hub and a payload, which the device SDK returns.
  const customId = need('CUSTOM_REG_ID');
  out.customEnrollment = (await service.createOrUpdateIndividualEnrollment({
    registrationId: customId,
    attestation: { type: 'symmetricKey', symmetricKey: { primaryKey: symKey, secondaryKey: symKey } },
    allocationPolicy: 'custom',
    customAllocationDefinition: { webhookUrl: need('CUSTOM_WEBHOOK_URL'), apiVersion: '2021-10-01' },
  })).responseBody;
  const customSecurity = new SymmetricKeySecurityClient(customId, symKey);
  const customClient = ProvisioningDeviceClient.create(host, need('ID_SCOPE'), new DeviceHttpTransport(httpBase()), customSecurity);
  customClient.setProvisioningPayload({ model: 'node-toaster', firmware: '1.2.3' });
  out.custom = await customClient.register();

  // A wrong key must be refused by the emulator, and the SDK must report it.
  try {
    await register(new SymmetricKeySecurityClient(symId, Buffer.from('not the key, not the key!!').toString('base64')));
    out.wrongKey = 'accepted';
  } catch (err) {
    out.wrongKey = 'rejected';
  }

  // Service operations the SDK offers beyond create/get/delete (issue 19): the attestation
  // mechanisms, the registration states of a group, a registration state read and deleted
  // (with its etag as If-Match), and a bulk operation.
  out.individualAttestation = (await service.getIndividualEnrollmentAttestationMechanism(symId)).responseBody;
  out.groupAttestation = (await service.getEnrollmentGroupAttestationMechanism(groupId)).responseBody;
  const groupQuery = service.createEnrollmentGroupDeviceRegistrationStateQuery({ query: '*' }, groupId);
  out.groupRegistrations = (await groupQuery.next()).responseBody;
  const state = (await service.getDeviceRegistrationState(groupRegId)).responseBody;
  out.registrationState = state;
  await service.deleteDeviceRegistrationState(groupRegId, state.etag);
  try {
    await service.getDeviceRegistrationState(groupRegId);
    out.registrationStateAfterDelete = 'found';
  } catch (err) {
    out.registrationStateAfterDelete = { statusCode: err.response && err.response.statusCode, body: String(err.responseBody) };
  }
  const bulkEnrollment = (id) => ({ registrationId: id, attestation: { type: 'symmetricKey', symmetricKey: { primaryKey: symKey, secondaryKey: symKey } } });
  // runBulkEnrollmentOperation's promise form never settles (the SDK answers only a callback
  // it was given), so it is called with a callback.
  const bulk = (op) => new Promise((resolve, reject) => {
    service.runBulkEnrollmentOperation(op, (err, result) => (err ? reject(err) : resolve(result)));
  });
  out.bulkCreate = await bulk({ mode: 'create', enrollments: [bulkEnrollment('node-bulk-1'), bulkEnrollment('node-bulk-2')] });
  out.bulkCreateAgain = await bulk({ mode: 'create', enrollments: [bulkEnrollment('node-bulk-1')] });
  out.bulkDelete = await bulk({ mode: 'delete', enrollments: [bulkEnrollment('node-bulk-2')] });

  await service.deleteEnrollmentGroup(groupId);
  out.groupDeleted = true;
  process.stdout.write(JSON.stringify(out) + '\n');
}

main().catch((err) => {
  process.stderr.write(`official client run failed: ${err && err.stack ? err.stack : err}\n`);
  if (err && err.responseBody) process.stderr.write(`response body: ${JSON.stringify(err.responseBody)}\n`);
  process.exit(1);
});
