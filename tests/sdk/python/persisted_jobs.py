"""Prints, as one JSON object by job id, the jobs named on the command line as the official
Python service SDK (azure-iot-hub) reads them from a running `fleetsim hub`: tests/persistence.rs
compares what it prints before a hub is killed and after it restarted.

Env: FLEETSIM_CONNECTION_STRING (iothubowner; Python follows `HostName=host:port`),
REQUESTS_CA_BUNDLE (the hub's ca.pem). Run: python3 persisted_jobs.py JOB_ID...
"""

import json
import os
import sys

from azure.iot.hub import IoTHubJobManager

jobs = IoTHubJobManager.from_connection_string(os.environ["FLEETSIM_CONNECTION_STRING"])
print(json.dumps({job_id: jobs.get_scheduled_job(job_id).as_dict() for job_id in sys.argv[1:]},
                 default=str))
