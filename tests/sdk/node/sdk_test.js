// Drives a running `fleetsim hub --scenario tests/fixtures/sdk-hub.toml --https 127.0.0.1:443`
// with the official Node service SDK (azure-iothub). The Node SDK ignores ports in HostName, so
// the hub must serve HTTPS on 443; NODE_EXTRA_CA_CERTS must name the hub's ca.pem.
// Env: FLEETSIM_CONNECTION_STRING (iothubowner, HostName=localhost).
'use strict';

const assert = require('assert');
const { Registry, JobClient, Client } = require('azure-iothub');

const cs = process.env.FLEETSIM_CONNECTION_STRING;
if (!cs) {
  console.error('FLEETSIM_CONNECTION_STRING is not set');
  process.exit(2);
}
const registry = Registry.fromConnectionString(cs);
const jobs = JobClient.fromConnectionString(cs);
const client = Client.fromConnectionString(cs);
const run = Date.now().toString(36);

let passed = 0;
let failed = 0;
async function check(name, body) {
  try {
    await body();
    passed += 1;
    console.log(`ok - ${name}`);
  } catch (e) {
    failed += 1;
    console.log(`not ok - ${name}: ${e && e.stack ? e.stack : e}`);
  }
}

async function waitJob(id, wanted) {
  for (let i = 0; i < 100; i++) {
    const { jobStatus: result } = await jobs.getJob(id);
    if (wanted.includes(result.status)) return result;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`job ${id} never reached ${wanted}`);
}

async function main() {
  await check('Registry.getTwin', async () => {
    const { responseBody: twin } = await registry.getTwin('sdk-01');
    assert.strictEqual(twin.deviceId, 'sdk-01');
    assert.strictEqual(twin.tags.building, '43');
    assert.strictEqual(twin.connectionState, 'Connected');
  });

  await check('Registry.updateTwin with etag, then a stale etag fails', async () => {
    const { responseBody: twin } = await registry.getTwin('sdk-02');
    const patch = { tags: { ring: `node-${run}` }, properties: { desired: { fw: '2.0' } } };
    const { responseBody: updated } = await registry.updateTwin('sdk-02', patch, twin.etag);
    assert.strictEqual(updated.tags.ring, `node-${run}`);
    assert.strictEqual(updated.properties.desired.fw, '2.0');
    await assert.rejects(registry.updateTwin('sdk-02', patch, twin.etag), (e) => {
      assert.strictEqual(e.response.statusCode, 412);
      return true;
    });
  });

  await check('Registry.createQuery pages through twins', async () => {
    const query = registry.createQuery("SELECT * FROM devices WHERE tags.building = '43'", 7);
    const seen = [];
    let pages = 0;
    while (query.hasMoreResults && pages < 50) {
      const { result } = await query.nextAsTwin();
      pages += 1;
      seen.push(...result.map((t) => t.deviceId));
    }
    assert.strictEqual(seen.length, 20);
    assert.strictEqual(pages, 3);
  });

  await check('Client.invokeDeviceMethod', async () => {
    const { result } = await client.invokeDeviceMethod('sdk-03', {
      methodName: 'reboot',
      payload: { delay: 0 },
      responseTimeoutInSeconds: 10,
    });
    assert.strictEqual(result.status, 200);
  });

  await check('Client.invokeDeviceMethod on an unknown device is DeviceNotFound', async () => {
    await assert.rejects(
      client.invokeDeviceMethod('no-such-device', { methodName: 'reboot', payload: null }),
      (e) => {
        assert.strictEqual(e.response.statusCode, 404);
        assert.strictEqual(e.name, 'DeviceNotFoundError');
        return true;
      }
    );
  });

  await check('JobClient.scheduleDeviceMethod and getJob until completed', async () => {
    const id = `node-method-${run}`;
    const { jobStatus: created } = await jobs.scheduleDeviceMethod(
      id,
      "deviceId IN ['sdk-04', 'sdk-05']",
      { methodName: 'reboot', payload: { delay: 1 }, responseTimeoutInSeconds: 10 }
    );
    assert.strictEqual(created.jobId, id);
    assert.strictEqual(created.status, 'queued');
    const done = await waitJob(id, ['completed', 'failed']);
    assert.strictEqual(done.status, 'completed');
    assert.strictEqual(done.deviceJobStatistics.succeededCount, 2);
  });

  await check('JobClient.scheduleTwinUpdate', async () => {
    const id = `node-twin-${run}`;
    await jobs.scheduleTwinUpdate(id, "tags.building = '43'", {
      etag: '*',
      tags: { wave: `w-${run}` },
      properties: { desired: { firmware: '1.4.2' } },
    });
    const done = await waitJob(id, ['completed', 'failed']);
    assert.strictEqual(done.status, 'completed');
    assert.strictEqual(done.deviceJobStatistics.deviceCount, 20);
    const { responseBody: twin } = await registry.getTwin('sdk-07');
    assert.strictEqual(twin.tags.wave, `w-${run}`);
  });

  await check('JobClient.cancelJob on a future job', async () => {
    const id = `node-cancel-${run}`;
    const later = new Date(Date.now() + 3600 * 1000);
    await jobs.scheduleDeviceMethod(id, '*', { methodName: 'reboot' }, later, 600);
    const { jobStatus: result } = await jobs.cancelJob(id);
    assert.strictEqual(result.jobId, id);
    const done = await waitJob(id, ['cancelled']);
    assert.strictEqual(done.status, 'cancelled');
  });

  await check('JobClient.getJob on an unknown job is 404', async () => {
    await assert.rejects(jobs.getJob(`nope-${run}`), (e) => {
      assert.strictEqual(e.response.statusCode, 404);
      return true;
    });
  });

  await check('JobClient.createQuery pages and filters', async () => {
    const query = jobs.createQuery('scheduleDeviceMethod', undefined, 1);
    const ids = [];
    let pages = 0;
    // With promises, Query.next() without an argument restarts from the first page (an SDK
    // quirk): pass the continuation token explicitly. Bounded in case paging never ends.
    while (query.hasMoreResults && pages < 50) {
      const { result } = await query.next(query.continuationToken);
      pages += 1;
      ids.push(...result.map((j) => j.jobId));
    }
    assert.ok(ids.includes(`node-method-${run}`) && ids.includes(`node-cancel-${run}`), ids);
    assert.ok(!ids.includes(`node-twin-${run}`));
    assert.strictEqual(pages, ids.length);
    const cancelled = jobs.createQuery(undefined, 'cancelled');
    const { result } = await cancelled.next();
    assert.ok(result.every((j) => j.status === 'cancelled'));
    assert.ok(result.some((j) => j.jobId === `node-cancel-${run}`));
  });

  await check('Registry.createQuery over devices.jobs', async () => {
    const query = registry.createQuery(
      `SELECT * FROM devices.jobs WHERE devices.jobs.jobId = 'node-method-${run}'`
    );
    const { result } = await query.next();
    assert.strictEqual(result.length, 2);
    assert.ok(result.every((r) => r.status === 'completed' && r.jobType === 'scheduleDeviceMethod'));
  });

  console.log(`${passed} passed, ${failed} failed`);
  process.exit(failed === 0 ? 0 : 1);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
