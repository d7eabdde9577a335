// Drives a running `fleetsim hub --https 127.0.0.1:443 --mqtts 127.0.0.1:8883` with the official
// Node *device* SDK (azure-iot-device + azure-iot-device-mqtt) beside the service SDK
// (azure-iothub): several devices, each a Client made from a device connection string and
// trusting the hub's CA (setOptions({ ca })), connect over MQTT/TLS on 8883 (the SDK's fixed
// port); a method job reaches every onDeviceMethod handler and their answers complete it; a twin
// job's desired patch reaches every twin.on('properties.desired'); the reported properties they
// send appear in their twins over REST.
// Env: FLEETSIM_CONNECTION_STRING (iothubowner, HostName=localhost), FLEETSIM_CA (the hub's
// ca.pem; NODE_EXTRA_CA_CERTS too, for the service SDK's HTTPS). Bounded: exits 1 after 25 s.
'use strict';

const assert = require('assert');
const crypto = require('crypto');
const fs = require('fs');
const { Client: DeviceClient } = require('azure-iot-device');
const { Mqtt } = require('azure-iot-device-mqtt');
const { Registry, JobClient } = require('azure-iothub');

const cs = process.env.FLEETSIM_CONNECTION_STRING;
const caPath = process.env.FLEETSIM_CA;
if (!cs || !caPath) {
  console.error('FLEETSIM_CONNECTION_STRING and FLEETSIM_CA must be set');
  process.exit(2);
}
const ca = fs.readFileSync(caPath, 'utf8');
const registry = Registry.fromConnectionString(cs);
const jobs = JobClient.fromConnectionString(cs);
const run = Date.now().toString(36);
const DEVICES = 4;

let step = 'start';
const watchdog = setTimeout(() => {
  console.error(`not ok - timed out after 25 s during: ${step}`);
  process.exit(1);
}, 25000);

// Polls `check` until it returns a truthy value; fails after `seconds`.
async function eventually(what, check, seconds = 15) {
  const deadline = Date.now() + seconds * 1000;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`${what} did not happen within ${seconds} s`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function waitJob(id) {
  return eventually(`job ${id} to finish`, async () => {
    const { jobStatus: job } = await jobs.getJob(id);
    return ['completed', 'failed', 'cancelled'].includes(job.status) && job;
  });
}

// One device: registered with its own keys, connected with the SDK over MQTTS.
async function connectDevice(i) {
  const id = `node-dev-${run}-${i}`;
  const key = crypto.randomBytes(32).toString('base64');
  await registry.create({
    deviceId: id,
    status: 'enabled',
    authentication: { symmetricKey: { primaryKey: key, secondaryKey: key } },
  });
  const client = DeviceClient.fromConnectionString(
    `HostName=localhost;DeviceId=${id};SharedAccessKey=${key}`,
    Mqtt
  );
  await client.setOptions({ ca });
  const device = { id, client, methods: [], desired: [] };
  client.onDeviceMethod('reboot', (request, response) => {
    device.methods.push(request);
    response.send(201, { rebooted: true, device: id, echo: request.payload }, (err) => {
      if (err) console.error(`${id}: method response failed: ${err}`);
    });
  });
  await client.open();
  device.twin = await client.getTwin();
  device.twin.on('properties.desired', (patch) => device.desired.push(patch));
  return device;
}

async function main() {
  step = 'connecting devices';
  const devices = await Promise.all([...Array(DEVICES).keys()].map(connectDevice));
  const ids = devices.map((d) => d.id);
  const condition = `deviceId IN [${ids.map((id) => `'${id}'`).join(', ')}]`;
  console.log(`ok - ${DEVICES} devices connected over MQTTS`);

  step = 'connectionState over REST';
  for (const id of ids) {
    await eventually(`${id} Connected`, async () => {
      const { responseBody: twin } = await registry.getTwin(id);
      return twin.connectionState === 'Connected';
    });
  }
  console.log('ok - every twin says Connected');

  step = 'method job';
  const methodJob = `node-dev-method-${run}`;
  await jobs.scheduleDeviceMethod(methodJob, condition, {
    methodName: 'reboot',
    payload: { delay: 3 },
    responseTimeoutInSeconds: 10,
    connectTimeoutInSeconds: 5,
  });
  const methodDone = await waitJob(methodJob);
  assert.strictEqual(methodDone.status, 'completed', JSON.stringify(methodDone));
  const stats = methodDone.deviceJobStatistics;
  assert.strictEqual(stats.deviceCount, DEVICES, JSON.stringify(stats));
  assert.strictEqual(stats.succeededCount, DEVICES, JSON.stringify(stats));
  assert.strictEqual(stats.failedCount, 0, JSON.stringify(stats));
  for (const d of devices) {
    assert.strictEqual(d.methods.length, 1, `${d.id} handled ${d.methods.length} requests`);
    assert.strictEqual(d.methods[0].methodName, 'reboot');
    assert.deepStrictEqual(d.methods[0].payload, { delay: 3 });
  }
  // The handlers' answers, as the hub recorded them per device.
  const { result: records } = await registry
    .createQuery(`SELECT * FROM devices.jobs WHERE devices.jobs.jobId = '${methodJob}'`)
    .next();
  assert.strictEqual(records.length, DEVICES);
  for (const r of records) {
    const answer = r.outcome.deviceMethodResponse;
    assert.strictEqual(answer.status, 201, JSON.stringify(r));
    assert.deepStrictEqual(answer.payload, { rebooted: true, device: r.deviceId, echo: { delay: 3 } });
  }
  console.log('ok - the method job reached every onDeviceMethod and completed: all succeeded');

  step = 'twin job';
  const twinJob = `node-dev-twin-${run}`;
  const fw = `3-${run}`;
  await jobs.scheduleTwinUpdate(twinJob, condition, {
    etag: '*',
    properties: { desired: { fw } },
  });
  for (const d of devices) {
    const patch = await eventually(`${d.id} desired patch`, () =>
      d.desired.find((p) => p.fw === fw)
    );
    assert.ok(Number.isInteger(patch.$version), JSON.stringify(patch));
    assert.strictEqual(d.twin.properties.desired.fw, fw);
  }
  const twinDone = await waitJob(twinJob);
  assert.strictEqual(twinDone.status, 'completed', JSON.stringify(twinDone));
  assert.strictEqual(twinDone.deviceJobStatistics.succeededCount, DEVICES);
  console.log("ok - the twin job's patch reached every twin.on('properties.desired')");

  step = 'reported properties';
  await Promise.all(
    devices.map(
      (d) =>
        // update() takes a callback only (no promise form in the SDK).
        new Promise((resolve, reject) =>
          d.twin.properties.reported.update({ temp: 20, fw, seen: d.id }, (err) =>
            err ? reject(err) : resolve()
          )
        )
    )
  );
  for (const d of devices) {
    const { responseBody: twin } = await eventually(`${d.id} reported over REST`, async () => {
      const got = await registry.getTwin(d.id);
      return got.responseBody.properties.reported.seen === d.id && got;
    });
    assert.strictEqual(twin.properties.reported.temp, 20);
    assert.strictEqual(twin.properties.reported.fw, fw);
  }
  console.log('ok - reported properties appear over REST');

  step = 'closing';
  await Promise.all(devices.map((d) => d.client.close()));
  clearTimeout(watchdog);
  console.log('all passed');
}

main().catch((e) => {
  console.error(`not ok - during ${step}: ${e && e.stack ? e.stack : e}`);
  process.exit(1);
});
