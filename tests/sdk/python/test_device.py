"""Drives a running `fleetsim hub --mqtts 127.0.0.1:8883` with the official Python *device* SDK
(azure-iot-device) beside the service SDK (azure-iot-hub): an IoTHubDeviceClient made from a
device connection string, trusting the hub's CA (server_verification_cert), connects over TLS
on 8883 (the SDK's fixed port); a method job reaches its handler and the handler's answer lands
in the device job record; a twin-update job's desired patch reaches its patch handler; a
property it reports shows in the twin over REST.

Env: FLEETSIM_CONNECTION_STRING (iothubowner), FLEETSIM_CA (the hub's ca.pem).
Run: python -m unittest -v test_device
"""

import base64
import os
import queue
import time
import unittest
import uuid

from azure.iot.device import IoTHubDeviceClient, MethodResponse
from azure.iot.hub import IoTHubJobManager, IoTHubRegistryManager
from azure.iot.hub.models import (
    CloudToDeviceMethod,
    JobRequest,
    QuerySpecification,
    Twin,
    TwinProperties,
)

CS = os.environ["FLEETSIM_CONNECTION_STRING"]
CA = open(os.environ["FLEETSIM_CA"]).read()
RUN = uuid.uuid4().hex[:8]


def eventually(check, what, seconds=15):
    deadline = time.time() + seconds
    while time.time() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"{what} did not happen within {seconds} s")


class DeviceSdk(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.registry = IoTHubRegistryManager.from_connection_string(CS)
        cls.jobs = IoTHubJobManager.from_connection_string(CS)
        cls.device_id = f"py-mqtt-{RUN}"
        key = base64.b64encode(os.urandom(32)).decode()
        cls.registry.create_device_with_sas(cls.device_id, key, key, "enabled")
        # The hub's certificate names localhost; the SDK connects to HostName on port 8883.
        device_cs = f"HostName=localhost;DeviceId={cls.device_id};SharedAccessKey={key}"
        cls.client = IoTHubDeviceClient.create_from_connection_string(
            device_cs, server_verification_cert=CA
        )
        cls.methods = queue.Queue()
        cls.patches = queue.Queue()

        def on_method(request):
            cls.methods.put(request)
            answer = {"rebooted": True, "echo": request.payload}
            cls.client.send_method_response(
                MethodResponse.create_from_method_request(request, 201, answer)
            )

        cls.client.on_method_request_received = on_method
        cls.client.on_twin_desired_properties_patch_received = cls.patches.put
        cls.client.connect()

    @classmethod
    def tearDownClass(cls):
        cls.client.shutdown()

    def test_1_connected(self):
        eventually(
            lambda: self.registry.get_twin(self.device_id).connection_state == "Connected",
            "connectionState Connected",
        )

    def test_2_method_job_reaches_the_handler(self):
        job_id = f"py-mqtt-method-{RUN}"
        request = JobRequest(
            job_id=job_id,
            type="scheduleDeviceMethod",
            query_condition=f"deviceId = '{self.device_id}'",
            cloud_to_device_method=CloudToDeviceMethod(
                method_name="reboot",
                payload={"delay": 2},
                response_timeout_in_seconds=15,
                connect_timeout_in_seconds=10,
            ),
            max_execution_time_in_seconds=60,
        )
        self.jobs.create_scheduled_job(job_id, request)
        got = self.methods.get(timeout=15)
        self.assertEqual((got.name, got.payload), ("reboot", {"delay": 2}))
        done = eventually(
            lambda: (j := self.jobs.get_scheduled_job(job_id)).status in ("completed", "failed") and j,
            "job end",
        )
        self.assertEqual(done.status, "completed")
        spec = QuerySpecification(
            query=f"SELECT * FROM devices.jobs WHERE devices.jobs.jobId = '{job_id}'"
        )
        result = self.registry.query_iot_hub(spec)
        self.assertEqual(result.type, "DeviceJob")
        # The SDK reads every row as a Twin; the job record's fields land in additional_properties.
        record = result.items[0].additional_properties
        outcome = record["outcome"]["deviceMethodResponse"]
        self.assertEqual(outcome["status"], 201)
        self.assertEqual(outcome["payload"], {"rebooted": True, "echo": {"delay": 2}})

    def test_3_twin_job_reaches_the_patch_handler(self):
        job_id = f"py-mqtt-twin-{RUN}"
        request = JobRequest(
            job_id=job_id,
            type="scheduleUpdateTwin",
            query_condition=f"deviceId = '{self.device_id}'",
            update_twin=Twin(etag="*", properties=TwinProperties(desired={"fw": f"2-{RUN}"})),
            max_execution_time_in_seconds=60,
        )
        self.jobs.create_scheduled_job(job_id, request)
        patch = self.patches.get(timeout=15)
        self.assertEqual(patch["fw"], f"2-{RUN}")
        self.assertIn("$version", patch)

    def test_4_reported_property_shows_over_rest(self):
        self.client.patch_twin_reported_properties({"temp": 21, "run": RUN})
        twin = eventually(
            lambda: (t := self.registry.get_twin(self.device_id)).properties.reported.get("run") == RUN and t,
            "reported property in the twin",
        )
        self.assertEqual(twin.properties.reported["temp"], 21)
        full = self.client.get_twin()
        self.assertEqual(full["reported"]["run"], RUN)


if __name__ == "__main__":
    unittest.main(verbosity=2)
