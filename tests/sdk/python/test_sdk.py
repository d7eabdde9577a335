"""Drives a running `fleetsim hub --scenario tests/fixtures/sdk-hub.toml` with the official
Python service SDK (azure-iot-hub). Python follows `HostName=host:port`, so any HTTPS port works;
REQUESTS_CA_BUNDLE must name the hub's ca.pem.

Env: FLEETSIM_CONNECTION_STRING (iothubowner). Run: python -m unittest -v test_sdk
"""

import datetime
import os
import time
import unittest
import uuid

from azure.iot.hub import IoTHubJobManager, IoTHubRegistryManager
from azure.iot.hub.models import (
    CloudToDeviceMethod,
    JobRequest,
    QuerySpecification,
    Twin,
    TwinProperties,
)
from msrest.exceptions import HttpOperationError

CS = os.environ["FLEETSIM_CONNECTION_STRING"]
RUN = uuid.uuid4().hex[:8]


def wait_job(jobs, job_id, wanted):
    for _ in range(100):
        job = jobs.get_scheduled_job(job_id)
        if job.status in wanted:
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} never reached {wanted}")


class ServiceSdk(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.registry = IoTHubRegistryManager.from_connection_string(CS)
        cls.jobs = IoTHubJobManager.from_connection_string(CS)

    def test_get_twin(self):
        twin = self.registry.get_twin("sdk-10")
        self.assertEqual(twin.device_id, "sdk-10")
        self.assertEqual(twin.tags["building"], "43")
        self.assertEqual(twin.connection_state, "Connected")

    def test_update_twin_with_etag(self):
        twin = self.registry.get_twin("sdk-11")
        patch = Twin(tags={"ring": f"py-{RUN}"}, properties=TwinProperties(desired={"fw": "3"}))
        updated = self.registry.update_twin("sdk-11", patch, twin.etag)
        self.assertEqual(updated.tags["ring"], f"py-{RUN}")
        self.assertEqual(updated.properties.desired["fw"], "3")
        with self.assertRaises(HttpOperationError) as stale:
            self.registry.update_twin("sdk-11", patch, twin.etag)
        self.assertEqual(stale.exception.response.status_code, 412)
        self.assertEqual(
            stale.exception.response.headers["iothub-errorcode"], "PreconditionFailed"
        )

    def test_invoke_device_method(self):
        result = self.registry.invoke_device_method(
            "sdk-12",
            CloudToDeviceMethod(method_name="reboot", payload={"delay": 0}, response_timeout_in_seconds=10),
        )
        self.assertEqual(result.status, 200)

    def test_query_iot_hub_pages(self):
        spec = QuerySpecification(query="SELECT * FROM devices WHERE tags.building = '43'")
        seen, token, pages = [], None, 0
        while pages < 50:
            result = self.registry.query_iot_hub(spec, token, 8)
            pages += 1
            self.assertEqual(result.type, "Twin")
            seen += [t.device_id for t in result.items]
            token = result.continuation_token
            if not token:
                break
        self.assertEqual((len(seen), pages), (20, 3))

    def test_method_job_create_get(self):
        job_id = f"py-method-{RUN}"
        request = JobRequest(
            job_id=job_id,
            type="scheduleDeviceMethod",
            query_condition="deviceId IN ['sdk-13', 'sdk-14', 'sdk-15']",
            cloud_to_device_method=CloudToDeviceMethod(
                method_name="reboot", payload={"delay": 1}, response_timeout_in_seconds=10
            ),
            max_execution_time_in_seconds=60,
        )
        created = self.jobs.create_scheduled_job(job_id, request)
        self.assertEqual((created.job_id, created.status), (job_id, "queued"))
        done = wait_job(self.jobs, job_id, ["completed", "failed"])
        self.assertEqual(done.status, "completed")
        self.assertEqual(done.device_job_statistics.succeeded_count, 3)
        with self.assertRaises(HttpOperationError) as dup:
            self.jobs.create_scheduled_job(job_id, request)
        self.assertEqual(dup.exception.response.status_code, 409)

    def test_twin_job_and_cancel(self):
        job_id = f"py-twin-{RUN}"
        later = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1)
        request = JobRequest(
            job_id=job_id,
            type="scheduleUpdateTwin",
            query_condition="*",
            update_twin=Twin(etag="*", tags={"later": "yes"}),
            start_time=later,
            max_execution_time_in_seconds=600,
        )
        self.jobs.create_scheduled_job(job_id, request)
        cancelled = self.jobs.cancel_scheduled_job(job_id)
        self.assertEqual(cancelled.job_id, job_id)
        self.assertEqual(wait_job(self.jobs, job_id, ["cancelled"]).status, "cancelled")

    def test_unknown_job_is_404(self):
        with self.assertRaises(HttpOperationError) as missing:
            self.jobs.get_scheduled_job(f"nope-{RUN}")
        self.assertEqual(missing.exception.response.status_code, 404)
        self.assertEqual(missing.exception.response.headers["iothub-errorcode"], "JobNotFound")

    def test_device_identity_lifecycle(self):
        device_id = f"py-dev-{RUN}"
        created = self.registry.create_device_with_sas(device_id, None, None, "enabled")
        self.assertEqual(created.device_id, device_id)
        self.assertTrue(created.authentication.symmetric_key.primary_key)
        got = self.registry.get_device(device_id)
        self.assertEqual(
            got.authentication.symmetric_key.primary_key,
            created.authentication.symmetric_key.primary_key,
        )
        self.registry.delete_device(device_id)
        with self.assertRaises(HttpOperationError) as gone:
            self.registry.get_device(device_id)
        self.assertEqual(gone.exception.response.status_code, 404)


if __name__ == "__main__":
    unittest.main(verbosity=2)
