"""Drives the official Azure IoT Python device client (azure-iot-device IoTHubDeviceClient)
against the hsmkit DPS emulator's emulated IoT hub over MQTT.

Run by dps-emulator/tests/sdk_hub.rs, which provisions the device through the emulator's DPS,
queues one cloud-to-device message for it, starts the emulator's MQTT listener on
127.0.0.1:8883 (where the SDK connects) and passes HUB_HOST, GATEWAY_HOST, DEVICE_ID,
DEVICE_KEY and CA_FILE. The connection string's GatewayHostName names the emulator (the SDK
connects there; the MQTT user name and the SAS still name HUB_HOST), and the emulator's dev CA
is given as server_verification_cert. The device sends one telemetry message with
properties, reads its twin, reports a property and receives its cloud-to-device message;
then a wrong key is refused. Prints one JSON object; exits non-zero on the first failure.
"""

import json
import os
import sys
import threading

from azure.iot.device import IoTHubDeviceClient, Message
from azure.iot.device.exceptions import ClientError, CredentialError, ConnectionFailedError


def need(name):
    value = os.environ.get(name)
    if not value:
        raise SystemExit(f"environment variable {name} is required")
    return value


def client_for(key):
    cs = (
        f"HostName={need('HUB_HOST')};DeviceId={need('DEVICE_ID')};"
        f"SharedAccessKey={key};GatewayHostName={need('GATEWAY_HOST')}"
    )
    with open(need("CA_FILE"), encoding="utf-8") as f:
        ca = f.read()
    return IoTHubDeviceClient.create_from_connection_string(
        cs, server_verification_cert=ca, connection_retry=False
    )


def main():
    out = {}
    client = client_for(need("DEVICE_KEY"))
    got = {}
    arrived = threading.Event()

    def on_message(message):
        got["body"] = message.data.decode("utf-8")
        got["properties"] = dict(message.custom_properties)
        got["messageId"] = message.message_id
        arrived.set()

    client.connect()
    client.on_message_received = on_message
    msg = Message(
        json.dumps({"from": "python"}), content_encoding="utf-8", content_type="application/json"
    )
    msg.custom_properties["source"] = "python"
    client.send_message(msg)
    twin = client.get_twin()
    out["desired"] = twin["desired"]
    client.patch_twin_reported_properties({"python": True})
    if not arrived.wait(20):
        raise SystemExit("no cloud-to-device message within 20 s")
    out["c2d"] = got
    client.shutdown()

    wrong = client_for("bm90IHRoZSBrZXksIG5vdCB0aGUga2V5ISE=")
    try:
        wrong.connect()
        out["wrongKey"] = "accepted"
        wrong.shutdown()
    except (ClientError, CredentialError, ConnectionFailedError) as e:
        out["wrongKey"] = "rejected"
        out["wrongKeyError"] = type(e).__name__
    print(json.dumps(out))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
