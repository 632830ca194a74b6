"""Drives the official Azure IoT Python device SDK (azure-iot-device) against the hsmkit DPS
emulator's MQTT listener. Run by dps-emulator/tests/python_clients.rs, which starts the emulator
with MQTT on 127.0.0.1:8883 (the SDK always connects to 8883) and passes:
  DPS_HOST, ID_SCOPE, CA_FILE (the emulator's dev CA, given as server_verification_cert),
  SYM_REG_ID, SYM_KEY, GROUP_REG_ID, GROUP_KEY, X509_REG_ID, X509_CERT_FILE, X509_KEY_FILE;
  WEBSOCKETS=1 makes every client use MQTT over WebSocket (websockets=True: the SDK connects to
  port 443, wss://DPS_HOST/$iothub/websocket).
Prints one JSON object with every result on stdout; exits non-zero on the first failure.
"""

import base64
import hashlib
import hmac
import json
import os
import sys

from azure.iot.device import ProvisioningDeviceClient, X509


def need(name):
    value = os.environ.get(name)
    if not value:
        raise SystemExit(f"environment variable {name} is required")
    return value


def summary(result):
    state = result.registration_state
    return {
        "operationId": result.operation_id,
        "status": result.status,
        "deviceId": state.device_id if state else None,
        "assignedHub": state.assigned_hub if state else None,
        "payload": state.response_payload if state else None,
    }


def main():
    host = need("DPS_HOST")
    scope = need("ID_SCOPE")
    ws = {"websockets": True} if os.environ.get("WEBSOCKETS") == "1" else {}
    with open(need("CA_FILE")) as f:
        ca = f.read()
    out = {}

    if os.environ.get("ONLY_SYMMETRIC"):
        # One symmetric registration, for the fault-injection test: its outcome or its error.
        client = ProvisioningDeviceClient.create_from_symmetric_key(
            provisioning_host=host,
            registration_id=need("SYM_REG_ID"),
            id_scope=scope,
            symmetric_key=need("SYM_KEY"),
            server_verification_cert=ca,
            **ws,
        )
        try:
            out["symmetric"] = summary(client.register())
        except Exception as err:
            out["error"] = f"{type(err).__name__}: {err}"
        sys.stdout.write(json.dumps(out) + "\n")
        return

    client = ProvisioningDeviceClient.create_from_symmetric_key(
        provisioning_host=host,
        registration_id=need("SYM_REG_ID"),
        id_scope=scope,
        symmetric_key=need("SYM_KEY"),
        server_verification_cert=ca,
        **ws,
    )
    client.provisioning_payload = {"model": "python-sdk"}
    out["symmetric"] = summary(client.register())

    group_reg = need("GROUP_REG_ID")
    derived = base64.b64encode(
        hmac.new(base64.b64decode(need("GROUP_KEY")), group_reg.encode(), hashlib.sha256).digest()
    ).decode()
    client = ProvisioningDeviceClient.create_from_symmetric_key(
        provisioning_host=host,
        registration_id=group_reg,
        id_scope=scope,
        symmetric_key=derived,
        server_verification_cert=ca,
        **ws,
    )
    out["group"] = summary(client.register())

    x509 = X509(cert_file=need("X509_CERT_FILE"), key_file=need("X509_KEY_FILE"))
    client = ProvisioningDeviceClient.create_from_x509_certificate(
        provisioning_host=host,
        registration_id=need("X509_REG_ID"),
        id_scope=scope,
        x509=x509,
        server_verification_cert=ca,
        **ws,
    )
    out["x509"] = summary(client.register())

    # A wrong key must be refused by the emulator, and the SDK must report it.
    client = ProvisioningDeviceClient.create_from_symmetric_key(
        provisioning_host=host,
        registration_id=need("SYM_REG_ID"),
        id_scope=scope,
        symmetric_key=base64.b64encode(b"not the key, not the key!!").decode(),
        server_verification_cert=ca,
        **ws,
    )
    try:
        client.register()
        out["wrongKey"] = "accepted"
    except Exception as err:  # the SDK raises its own error types; any refusal will do
        out["wrongKey"] = "rejected"
        out["wrongKeyError"] = type(err).__name__

    sys.stdout.write(json.dumps(out) + "\n")


if __name__ == "__main__":
    main()
