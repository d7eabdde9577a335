//! Job lifecycle and statistics invariants of the job engine, on tokio's paused clock. The test
//! plays the devices itself through the real in-process link: it reads what the hub sends and
//! answers as a device would. The link-model tests at the end run a scenario's own in-process
//! devices instead, wired as a run wires them, behind their cohorts' `[cohort.link]`.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Map, Value};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use fleetsim::clock::Clock;
use fleetsim::fleet::inproc::InProcLink;
use fleetsim::hub::jobs::{
    Abort, AbortRule, Failure, JobControl, JobKind, JobRequest, MethodCall, TwinUpdate,
};
use fleetsim::hub::registry::Registry;
use fleetsim::hub::throttle::{Limits, Tier};
use fleetsim::hub::twin::Twin;
use fleetsim::hub::{Engine, ErrorCode, Hub, HubView};
use fleetsim::ids::DeviceIdx;
use fleetsim::link::{ClockAgreement, DeviceLink, FromDevice, OpId, Receipt, Received, ToDevice};
use fleetsim::metrics::Measure;

/// The first two devices of a test's registry.
const D0: DeviceIdx = DeviceIdx::new(0);
const D1: DeviceIdx = DeviceIdx::new(1);

struct Harness {
    hub: Hub,
    clock: Clock,
    to_dev: mpsc::UnboundedReceiver<Vec<ToDevice>>,
    from_dev: mpsc::UnboundedSender<Vec<FromDevice>>,
    view: watch::Receiver<Arc<HubView>>,
    _stop: tokio_util::sync::DropGuard,
}

/// `n` devices `d0..`, even ones tagged building 43, odd ones 44; `online` of them connected.
fn harness(n: u32, online: u32, limits: Limits) -> Harness {
    harness_on(Clock::start(), n, online, limits)
}

/// A harness on `clock` (a virtual clock idles a simulated second at a time, not 100 ms).
fn harness_on(clock: Clock, n: u32, online: u32, limits: Limits) -> Harness {
    harness_link(clock, n, online, limits, |tx| Box::new(InProcLink::new(tx)))
}

/// A harness whose engine sends through the link `link` makes of the test's device channel.
fn harness_link(
    clock: Clock,
    n: u32,
    online: u32,
    limits: Limits,
    link: impl FnOnce(mpsc::UnboundedSender<Vec<ToDevice>>) -> Box<dyn DeviceLink>,
) -> Harness {
    let mut registry = Registry::new(clock.clone());
    for i in 0..n {
        let mut tags = Map::new();
        tags.insert(
            "building".into(),
            json!(if i % 2 == 0 { "43" } else { "44" }),
        );
        registry
            .add(
                &format!("d{i}"),
                Twin::new(Arc::new(tags), Default::default(), Default::default()),
            )
            .unwrap();
    }
    let (to_tx, to_dev) = mpsc::unbounded_channel();
    let (from_dev, from_rx) = mpsc::unbounded_channel();
    let (cmd_tx, cmd_rx) = mpsc::channel(64);
    let (view_tx, view) = watch::channel(Arc::<HubView>::default());
    let stop = CancellationToken::new();
    let engine = Engine::new(clock.clone(), limits, registry, link(to_tx));
    tokio::spawn(engine.run(cmd_rx, from_rx, view_tx, stop.clone()));
    from_dev
        .send(
            (0..online)
                .map(|i| FromDevice::Connected {
                    device: DeviceIdx::new(i),
                })
                .collect(),
        )
        .unwrap();
    Harness {
        hub: Hub::new(cmd_tx),
        clock,
        to_dev,
        from_dev,
        view,
        _stop: stop.drop_guard(),
    }
}

fn method_job(
    id: &str,
    query: &str,
    response_timeout_s: u32,
    connect_timeout_s: u32,
) -> JobRequest {
    JobRequest {
        job_id: id.into(),
        kind: JobKind::Method(MethodCall {
            name: "reboot".into(),
            payload: Arc::new(json!({"delay": 0})),
            response_timeout_s,
            connect_timeout_s,
        }),
        query_condition: query.into(),
        start_time: None,
        max_execution_s: 3600,
        control: Default::default(),
    }
}

fn stats(job: &Value) -> (u64, u64, u64, u64, u64) {
    let s = &job["deviceJobStatistics"];
    let n = |k: &str| s[k].as_u64().unwrap();
    let t = (
        n("deviceCount"),
        n("succeededCount"),
        n("failedCount"),
        n("runningCount"),
        n("pendingCount"),
    );
    assert_eq!(
        t.0,
        t.1 + t.2 + t.3 + t.4,
        "the four counts add up to deviceCount: {s}"
    );
    t
}

/// Receives the next batch of method calls and answers each with `status`.
async fn answer_methods(h: &mut Harness, status: i32) -> usize {
    let batch = h.to_dev.recv().await.unwrap();
    let now = h.clock.now_us();
    let answers: Vec<_> = batch
        .into_iter()
        .filter_map(|m| match m {
            ToDevice::Method { op, device, .. } => Some(FromDevice::MethodResponse {
                op,
                device,
                status,
                payload: Some(Box::new(json!({"rebooted": device.get()}))),
                delivered_us: Some(now),
            }),
            _ => None,
        })
        .collect();
    let n = answers.len();
    h.from_dev.send(answers).unwrap();
    n
}

async fn wait_status(h: &Harness, id: &str, status: &str) -> Value {
    for _ in 0..10_000 {
        let job = h.hub.get_job(id).await.unwrap();
        stats(&job);
        if job["status"] == status {
            return job;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("job {id} never reached {status}");
}

async fn records(h: &Harness, job: &str) -> Vec<Value> {
    h.hub
        .query(&format!(
            "SELECT * FROM devices.jobs WHERE devices.jobs.jobId = '{job}'"
        ))
        .await
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn method_job_runs_to_completion_with_exact_statistics() {
    let mut h = harness(10, 10, Limits::UNLIMITED);
    let created = h
        .hub
        .create_job(method_job("j1", "tags.building = '43'", 30, 0))
        .await
        .unwrap();
    assert_eq!(created["status"], "queued");
    assert_eq!(answer_methods(&mut h, 200).await, 5);
    let job = wait_status(&h, "j1", "completed").await;
    assert_eq!(stats(&job), (5, 5, 0, 0, 0));
    assert!(job["endTime"].is_string());
    let recs = records(&h, "j1").await;
    assert_eq!(recs.len(), 5);
    for r in &recs {
        assert_eq!(r["status"], "completed");
        assert_eq!(r["outcome"]["deviceMethodResponse"]["status"], 200);
        assert!(r["outcome"]["deviceMethodResponse"]["payload"]["rebooted"].is_number());
    }
}

#[tokio::test(start_paused = true)]
async fn device_error_status_fails_the_device_and_keeps_the_outcome() {
    let mut h = harness(4, 4, Limits::UNLIMITED);
    h.hub.create_job(method_job("j", "*", 30, 0)).await.unwrap();
    answer_methods(&mut h, 500).await;
    let job = wait_status(&h, "j", "completed").await;
    assert_eq!(stats(&job), (4, 0, 4, 0, 0));
    let recs = records(&h, "j").await;
    assert_eq!(recs[0]["status"], "failed");
    assert_eq!(recs[0]["outcome"]["deviceMethodResponse"]["status"], 500);
    assert_eq!(recs[0]["error"]["code"], "DeviceMethodFailed");
}

#[tokio::test(start_paused = true)]
async fn silent_devices_time_out_with_504101_at_the_response_timeout() {
    let mut h = harness(3, 3, Limits::UNLIMITED);
    h.hub.create_job(method_job("j", "*", 5, 0)).await.unwrap();
    let sent = h.to_dev.recv().await.unwrap();
    assert_eq!(sent.len(), 3);
    let t0 = h.clock.now_us();
    let job = wait_status(&h, "j", "running").await;
    assert_eq!(stats(&job), (3, 0, 0, 3, 0));
    let job = wait_status(&h, "j", "completed").await;
    let waited = h.clock.now_us() - t0;
    assert!(
        (5_000_000..5_100_000).contains(&waited),
        "timed out after {waited} µs"
    );
    assert_eq!(stats(&job), (3, 0, 3, 0, 0));
    let recs = records(&h, "j").await;
    assert_eq!(recs[0]["error"]["code"], "GatewayTimeout");
    assert!(recs[0]["error"]["description"]
        .as_str()
        .unwrap()
        .contains("504101"));
}

#[tokio::test(start_paused = true)]
async fn offline_devices_wait_for_the_connect_timeout_then_fail_404103() {
    // d0 online; d1 connects after 3 s; d2 never: connect timeout 10 s.
    let mut h = harness(3, 1, Limits::UNLIMITED);
    h.hub
        .create_job(method_job("j", "*", 30, 10))
        .await
        .unwrap();
    assert_eq!(answer_methods(&mut h, 200).await, 1);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let job = h.hub.get_job("j").await.unwrap();
    assert_eq!(
        stats(&job),
        (3, 1, 0, 0, 2),
        "parked devices count as pending"
    );
    h.from_dev
        .send(vec![FromDevice::Connected { device: D1 }])
        .unwrap();
    assert_eq!(answer_methods(&mut h, 200).await, 1);
    let job = wait_status(&h, "j", "completed").await;
    assert_eq!(stats(&job), (3, 2, 1, 0, 0));
    let recs = records(&h, "j").await;
    let d2 = recs.iter().find(|r| r["deviceId"] == "d2").unwrap();
    assert_eq!(d2["error"]["code"], "DeviceNotOnline");
    let twin = h.hub.get_twin("d1").await.unwrap();
    assert_eq!(twin["connectionState"], "Connected");
    // One engine-lag sample per operation, whether it was parked or not.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let lag = h
        .view
        .borrow()
        .metrics
        .measure(fleetsim::metrics::Measure::EngineLag)
        .stats
        .count;
    assert_eq!(lag, 3);
}

#[tokio::test(start_paused = true)]
async fn zero_connect_timeout_fails_offline_devices_at_once() {
    let mut h = harness(2, 1, Limits::UNLIMITED);
    h.hub.create_job(method_job("j", "*", 30, 0)).await.unwrap();
    answer_methods(&mut h, 200).await;
    let job = wait_status(&h, "j", "completed").await;
    assert_eq!(stats(&job), (2, 1, 1, 0, 0));
}

#[tokio::test(start_paused = true)]
async fn future_start_is_scheduled_then_runs() {
    let mut h = harness(2, 2, Limits::UNLIMITED);
    let mut req = method_job("later", "*", 30, 0);
    req.start_time = Some(h.clock.wall_at(h.clock.now_us() + 60_000_000));
    let created = h.hub.create_job(req).await.unwrap();
    assert_eq!(created["status"], "queued");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(h.hub.get_job("later").await.unwrap()["status"], "scheduled");
    answer_methods(&mut h, 200).await;
    assert!(
        h.clock.now_us() >= 60_000_000,
        "dispatched at its start time"
    );
    wait_status(&h, "later", "completed").await;
}

#[tokio::test(start_paused = true)]
async fn duplicate_ids_and_unknown_jobs_are_refused() {
    let h = harness(1, 1, Limits::UNLIMITED);
    h.hub.create_job(method_job("j", "*", 30, 0)).await.unwrap();
    let e = h
        .hub
        .create_job(method_job("j", "*", 30, 0))
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::JobAlreadyExists);
    assert_eq!(
        h.hub.get_job("nope").await.unwrap_err().code,
        ErrorCode::JobNotFound
    );
}

#[tokio::test(start_paused = true)]
async fn a_select_query_condition_fails_the_job() {
    let h = harness(1, 1, Limits::UNLIMITED);
    h.hub
        .create_job(method_job("j", "SELECT * FROM devices", 30, 0))
        .await
        .unwrap();
    let job = wait_status(&h, "j", "failed").await;
    assert!(
        job["failureReason"]
            .as_str()
            .unwrap()
            .contains("WHERE part"),
        "{job}"
    );
}

#[tokio::test(start_paused = true)]
async fn cancel_ends_the_job_and_its_devices() {
    let mut h = harness(4, 4, Limits::UNLIMITED);
    h.hub.create_job(method_job("j", "*", 60, 0)).await.unwrap();
    let _ = h.to_dev.recv().await.unwrap(); // devices stay silent
    let job = h.hub.cancel_job("j").await.unwrap();
    assert_eq!(job["status"], "cancelled");
    assert_eq!(
        stats(&job),
        (4, 0, 4, 0, 0),
        "cancelled devices count as failed"
    );
    let recs = records(&h, "j").await;
    assert!(recs.iter().all(|r| r["status"] == "canceled"));
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert_eq!(
        stats(&h.hub.get_job("j").await.unwrap()),
        (4, 0, 4, 0, 0),
        "nothing moves after cancel"
    );
}

#[tokio::test(start_paused = true)]
async fn s1_paces_device_operations_and_max_execution_fails_the_rest() {
    // S1: 10 device operations per second; 100 devices; 5 s to run.
    let mut h = harness(
        100,
        100,
        Limits {
            tier: Tier::S1,
            units: 2,
            ..Limits::UNLIMITED
        },
    );
    let mut req = method_job("slow", "*", 30, 0);
    req.max_execution_s = 5;
    h.hub.create_job(req).await.unwrap();
    let mut dispatched = 0;
    let t0 = h.clock.now_us();
    while h.clock.now_us() - t0 < 5_000_000 {
        tokio::select! {
            n = answer_methods(&mut h, 200) => dispatched += n,
            _ = tokio::time::sleep(Duration::from_millis(5_100)) => break,
        }
    }
    let job = wait_status(&h, "slow", "failed").await;
    let (count, ok, failed, _, _) = stats(&job);
    assert_eq!(count, 100);
    assert!(
        (49..=52).contains(&dispatched),
        "10/s for 5 s dispatched {dispatched}"
    );
    assert_eq!((ok, failed), (dispatched as u64, 100 - dispatched as u64));
    assert!(job["failureReason"]
        .as_str()
        .unwrap()
        .contains("maxExecutionTimeInSeconds"));
}

#[tokio::test(start_paused = true)]
async fn s1_allows_one_active_job() {
    let h = harness(
        2,
        2,
        Limits {
            tier: Tier::S1,
            units: 1,
            ..Limits::UNLIMITED
        },
    );
    h.hub.create_job(method_job("a", "*", 30, 0)).await.unwrap();
    let e = h
        .hub
        .create_job(method_job("b", "*", 30, 0))
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::ThrottlingMaxActiveJobCountExceeded);
    assert_eq!(e.code.number(), 429004);
}

#[tokio::test(start_paused = true)]
async fn twin_job_updates_twins_and_notifies_devices_when_they_connect() {
    let mut h = harness(2, 1, Limits::UNLIMITED);
    let desired: Map<String, Value> = [("firmware".to_owned(), json!("1.4.2"))]
        .into_iter()
        .collect();
    let tags: Map<String, Value> = [("ring".to_owned(), json!("canary"))].into_iter().collect();
    let req = JobRequest {
        job_id: "fw".into(),
        kind: JobKind::Twin(TwinUpdate {
            tags: Some(Arc::new(tags)),
            desired: Some(Arc::new(desired)),
        }),
        query_condition: "*".into(),
        start_time: None,
        max_execution_s: 60,
        control: Default::default(),
    };
    h.hub.create_job(req).await.unwrap();
    let job = wait_status(&h, "fw", "completed").await;
    assert_eq!(
        stats(&job),
        (2, 2, 0, 0, 0),
        "twin updates succeed online or not"
    );
    let batch = h.to_dev.recv().await.unwrap();
    assert!(
        matches!(
            &batch[..],
            [ToDevice::Desired {
                device: D0,
                version: 2,
                ..
            }]
        ),
        "{batch:?}"
    );
    let twin = h.hub.get_twin("d1").await.unwrap();
    assert_eq!(twin["tags"]["ring"], "canary");
    assert_eq!(twin["properties"]["desired"]["firmware"], "1.4.2");
    assert_eq!(twin["version"], 3);
    // d1 connects later and gets the patch then.
    h.from_dev
        .send(vec![FromDevice::Connected { device: D1 }])
        .unwrap();
    let batch = h.to_dev.recv().await.unwrap();
    assert!(
        matches!(&batch[..], [ToDevice::Desired { device: D1, .. }]),
        "{batch:?}"
    );
    let rows = h
        .hub
        .query("SELECT * FROM devices WHERE tags.ring = 'canary'")
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
}

#[tokio::test(start_paused = true)]
async fn direct_methods_answer_or_fail_as_iot_hub_does() {
    let mut h = harness(2, 1, Limits::UNLIMITED);
    let call = |timeout| MethodCall {
        name: "ping".into(),
        payload: Arc::new(Value::Null),
        response_timeout_s: timeout,
        connect_timeout_s: 0,
    };
    let hub = h.hub.clone();
    let pending = tokio::spawn(async move { hub.invoke_method("d0", call(5)).await });
    answer_methods(&mut h, 201).await;
    let (status, payload) = pending.await.unwrap().unwrap();
    assert_eq!((status, payload["rebooted"].as_u64()), (201, Some(0)));
    let e = h.hub.invoke_method("d1", call(5)).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::DeviceNotOnline);
    let e = h.hub.invoke_method("zz", call(5)).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::DeviceNotFound);
    let e = h.hub.invoke_method("d0", call(5)).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::GatewayTimeout);
}

#[tokio::test(start_paused = true)]
async fn statistics_add_up_at_every_moment() {
    let mut h = harness(
        200,
        150,
        Limits {
            tier: Tier::S3,
            units: 1,
            ..Limits::UNLIMITED
        },
    );
    h.hub.create_job(method_job("j", "*", 5, 2)).await.unwrap();
    let mut seen = 0;
    loop {
        tokio::select! {
            Some(batch) = h.to_dev.recv() => {
                // Answer every other call; the rest time out.
                let answers: Vec<_> = batch.into_iter().filter_map(|m| match m {
                    ToDevice::Method { op, device, .. } if device.get() % 2 == 0 => Some(FromDevice::MethodResponse {
                        op, device, status: 200, payload: None, delivered_us: None }),
                    _ => None,
                }).collect();
                h.from_dev.send(answers).unwrap();
            }
            _ = h.view.changed() => {
                let view = h.view.borrow_and_update().clone();
                for j in &view.jobs {
                    let s = j.stats;
                    assert_eq!(s.device_count, s.failed_count + s.succeeded_count + s.running_count + s.pending_count);
                    seen += 1;
                }
                if view.all_jobs_done() && !view.jobs.is_empty() {
                    let s = view.jobs[0].stats;
                    assert_eq!((s.device_count, s.succeeded_count, s.failed_count), (200, 75, 125));
                    break;
                }
            }
        }
    }
    assert!(seen > 20, "observed the statistics {seen} times");
}

/// The method requests of the next batch the hub sends: (op, device).
async fn requests(h: &mut Harness) -> Vec<(fleetsim::link::OpId, DeviceIdx)> {
    let batch = h.to_dev.recv().await.unwrap();
    batch
        .into_iter()
        .filter_map(|m| match m {
            ToDevice::Method { op, device, .. } => Some((op, device)),
            _ => None,
        })
        .collect()
}

fn response(op: fleetsim::link::OpId, device: DeviceIdx) -> FromDevice {
    FromDevice::MethodResponse {
        op,
        device,
        status: 200,
        payload: None,
        delivered_us: None,
    }
}

#[tokio::test(start_paused = true)]
async fn an_answer_from_another_device_is_ignored() {
    let mut h = harness(2, 2, Limits::UNLIMITED);
    h.hub
        .create_job(method_job("j", "deviceId = 'd0'", 30, 0))
        .await
        .unwrap();
    let [(op, D0)] = requests(&mut h).await[..] else {
        panic!("one request, to d0")
    };
    h.from_dev.send(vec![response(op, D1)]).unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let job = h.hub.get_job("j").await.unwrap();
    assert_eq!(stats(&job), (1, 0, 0, 1, 0), "d1's answer does not count");
    h.from_dev.send(vec![response(op, D0)]).unwrap();
    wait_status(&h, "j", "completed").await;

    // The same for a direct method.
    let hub = h.hub.clone();
    let call = MethodCall {
        name: "ping".into(),
        payload: Arc::new(Value::Null),
        response_timeout_s: 5,
        connect_timeout_s: 0,
    };
    let pending = tokio::spawn(async move { hub.invoke_method("d0", call).await });
    let [(op, D0)] = requests(&mut h).await[..] else {
        panic!("one request, to d0")
    };
    h.from_dev.send(vec![response(op, D1)]).unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!pending.is_finished(), "d1's answer does not count");
    h.from_dev.send(vec![response(op, D0)]).unwrap();
    assert_eq!(pending.await.unwrap().unwrap().0, 200);
}

#[tokio::test(start_paused = true)]
async fn held_methods_time_out_from_their_release_or_fail_404103_when_unreachable() {
    // Response timeout 5 s, connect timeout 30 s; the transport holds both requests.
    let mut h = harness(2, 2, Limits::UNLIMITED);
    h.hub.create_job(method_job("j", "*", 5, 30)).await.unwrap();
    let sent = requests(&mut h).await;
    assert_eq!(sent.len(), 2);
    let held = sent
        .iter()
        .map(|&(op, device)| FromDevice::MethodHeld { op, device });
    h.from_dev.send(held.collect()).unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let job = h.hub.get_job("j").await.unwrap();
    assert_eq!(
        stats(&job),
        (2, 0, 0, 2, 0),
        "held: no response timeout yet"
    );
    // d0 subscribes at 10 s and stays silent; d1 never subscribes.
    let released = h.clock.now_us();
    let (op0, op1) = (sent[0].0, sent[1].0);
    h.from_dev
        .send(vec![
            FromDevice::MethodReleased {
                op: op0,
                device: D0,
            },
            FromDevice::MethodUnreachable {
                op: op1,
                device: D1,
            },
        ])
        .unwrap();
    let job = wait_status(&h, "j", "completed").await;
    let waited = h.clock.now_us() - released;
    assert!(
        (5_000_000..5_100_000).contains(&waited),
        "timed out {waited} µs after the release"
    );
    assert_eq!(stats(&job), (2, 0, 2, 0, 0));
    let recs = records(&h, "j").await;
    let code = |d: &str| {
        let r = recs.iter().find(|r| r["deviceId"] == d).unwrap();
        r["error"]["code"].as_str().unwrap().to_owned()
    };
    assert_eq!(code("d0"), "GatewayTimeout");
    assert_eq!(code("d1"), "DeviceNotOnline");
}

#[tokio::test(start_paused = true)]
async fn held_direct_methods_answer_after_release_or_fail_404103() {
    let mut h = harness(2, 2, Limits::UNLIMITED);
    let call = MethodCall {
        name: "ping".into(),
        payload: Arc::new(Value::Null),
        response_timeout_s: 5,
        connect_timeout_s: 20,
    };
    let hub = h.hub.clone();
    let c = call.clone();
    let answered = tokio::spawn(async move { hub.invoke_method("d0", c).await });
    let [(op, D0)] = requests(&mut h).await[..] else {
        panic!("one request, to d0")
    };
    h.from_dev
        .send(vec![FromDevice::MethodHeld { op, device: D0 }])
        .unwrap();
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert!(!answered.is_finished(), "held: no response timeout yet");
    h.from_dev
        .send(vec![FromDevice::MethodReleased { op, device: D0 }])
        .unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    h.from_dev.send(vec![response(op, D0)]).unwrap();
    assert_eq!(answered.await.unwrap().unwrap().0, 200);

    let hub = h.hub.clone();
    let failed = tokio::spawn(async move { hub.invoke_method("d1", call).await });
    let [(op, D1)] = requests(&mut h).await[..] else {
        panic!("one request, to d1")
    };
    // Another device cannot give it up; its own transport can.
    h.from_dev
        .send(vec![FromDevice::MethodUnreachable { op, device: D0 }])
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!failed.is_finished());
    h.from_dev
        .send(vec![FromDevice::MethodUnreachable { op, device: D1 }])
        .unwrap();
    let e = failed.await.unwrap().unwrap_err();
    assert_eq!(e.code, ErrorCode::DeviceNotOnline);
}

#[tokio::test(start_paused = true)]
async fn a_direct_method_sent_on_connect_gets_its_whole_response_timeout() {
    // d1 connects 8 s into a 10 s connect timeout; it answers 4 s later, past the connect
    // deadline but within the 30 s response timeout.
    let mut h = harness(2, 1, Limits::UNLIMITED);
    let call = MethodCall {
        name: "ping".into(),
        payload: Arc::new(Value::Null),
        response_timeout_s: 30,
        connect_timeout_s: 10,
    };
    let hub = h.hub.clone();
    let pending = tokio::spawn(async move { hub.invoke_method("d1", call).await });
    tokio::time::sleep(Duration::from_secs(8)).await;
    h.from_dev
        .send(vec![FromDevice::Connected { device: D1 }])
        .unwrap();
    let [(op, D1)] = requests(&mut h).await[..] else {
        panic!("one request, to d1")
    };
    tokio::time::sleep(Duration::from_secs(4)).await;
    h.from_dev.send(vec![response(op, D1)]).unwrap();
    assert_eq!(pending.await.unwrap().unwrap().0, 200);
}

/// Two cohorts behind links, for the in-process fleet: `slow-*` (tag `net = "slow"`) 200 ms each
/// way with methods answered after 50 ms, `lost-*` (`net = "lost"`) losing every message.
const LINKED: &str = r#"
name = "links"
duration = "10m"
[[cohort]]
name = "slow"
count = 5
id_prefix = "slow-"
tags = { net = "slow" }
[cohort.methods.default]
latency = { dist = "fixed", value = "50ms" }
[cohort.link]
latency = { dist = "fixed", value = "200ms" }
[[cohort]]
name = "lost"
count = 5
id_prefix = "lost-"
tags = { net = "lost" }
[cohort.link]
latency = { dist = "lognormal", median = "120ms", p99 = "900ms" }
loss = 1.0
"#;

/// The engine and the in-process devices of [`LINKED`], as a run wires them.
async fn linked() -> (fleetsim::app::wiring::Running, Clock) {
    let clock = Clock::start();
    let scenario = fleetsim::scenario::parse(LINKED, "links.toml").unwrap();
    let running = fleetsim::app::wiring::start(
        &scenario,
        1,
        fleetsim::shard::Shard::ALL,
        clock.clone(),
        Limits::UNLIMITED,
        &Default::default(),
        None,
    )
    .await
    .unwrap();
    (running, clock)
}

/// Polls job `id` every 10 ms until it reaches `status`.
async fn wait_job(hub: &Hub, id: &str, status: &str) -> Value {
    for _ in 0..100_000 {
        let job = hub.get_job(id).await.unwrap();
        if job["status"] == status {
            return job;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("job {id} never reached {status}");
}

#[tokio::test(start_paused = true)]
async fn a_link_adds_its_latency_both_ways_to_a_method_job() {
    let (running, clock) = linked().await;
    let t0 = clock.now_us();
    running
        .hub
        .create_job(method_job("j", "tags.net = 'slow'", 5, 0))
        .await
        .unwrap();
    let job = wait_job(&running.hub, "j", "completed").await;
    let took = clock.now_us() - t0;
    assert_eq!(stats(&job), (5, 5, 0, 0, 0));
    // 200 ms down, 50 ms on the device, 200 ms up (and at most one 10 ms poll).
    assert!(
        (450_000..=500_000).contains(&took),
        "completed after {took} µs"
    );
    running.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_link_losing_every_message_times_every_method_out_with_504101() {
    let (running, clock) = linked().await;
    let t0 = clock.now_us();
    running
        .hub
        .create_job(method_job("j", "tags.net = 'lost'", 5, 0))
        .await
        .unwrap();
    let job = wait_job(&running.hub, "j", "completed").await;
    let waited = clock.now_us() - t0;
    assert_eq!(stats(&job), (5, 0, 5, 0, 0));
    assert!(
        (5_000_000..5_100_000).contains(&waited),
        "timed out after {waited} µs"
    );
    let recs = running
        .hub
        .query("SELECT * FROM devices.jobs WHERE devices.jobs.jobId = 'j'")
        .await
        .unwrap();
    assert_eq!(recs.len(), 5);
    for r in &recs {
        assert_eq!(r["error"]["code"], "GatewayTimeout", "{r}");
    }
    running.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_lost_desired_patch_is_never_acknowledged_and_a_slow_one_late() {
    let (running, _clock) = linked().await;
    let desired: Map<String, Value> = [("fw".to_owned(), json!("2"))].into_iter().collect();
    let req = JobRequest {
        job_id: "fw".into(),
        kind: JobKind::Twin(TwinUpdate {
            tags: None,
            desired: Some(Arc::new(desired)),
        }),
        query_condition: "*".into(),
        start_time: None,
        max_execution_s: 60,
        control: Default::default(),
    };
    running.hub.create_job(req).await.unwrap();
    let job = wait_job(&running.hub, "fw", "completed").await;
    assert_eq!(
        stats(&job),
        (10, 10, 0, 0, 0),
        "the twins are updated all the same"
    );
    let reported = |id: &'static str| {
        let hub = running.hub.clone();
        async move { hub.get_twin(id).await.unwrap()["properties"]["reported"]["fw"].clone() }
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        reported("slow-0").await,
        Value::Null,
        "not back before 400 ms"
    );
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(
        reported("slow-0").await,
        "2",
        "acknowledged after the round trip"
    );
    for id in ["lost-0", "lost-1", "lost-2", "lost-3", "lost-4"] {
        assert_eq!(reported(id).await, Value::Null, "{id} never saw the patch");
    }
    running.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn internal_options_target_an_explicit_set_and_abort_at_the_first_trip() {
    let mut h = harness(4, 4, Limits::UNLIMITED);
    let mut req = method_job("wave", "*", 30, 0);
    req.control.devices = Some(Arc::from([D1, DeviceIdx::new(3)].as_slice()));
    req.control.abort = Some(Abort {
        rules: vec![AbortRule {
            failure: Failure::Rejected,
            threshold: 0.5,
            min_executed: 1,
        }],
        base: Default::default(),
    });
    h.hub.create_job(req).await.unwrap();
    assert_eq!(answer_methods(&mut h, 500).await, 2);
    let job = wait_status(&h, "wave", "cancelled").await;
    assert_eq!(job["queryCondition"], "*");
    // The first answer trips the abort; the second arrives for a cancelled operation.
    assert_eq!(stats(&job), (2, 0, 2, 0, 0));
    let ids: Vec<Value> = records(&h, "wave")
        .await
        .iter()
        .map(|r| r["deviceId"].clone())
        .collect();
    assert_eq!(ids, vec![json!("d1"), json!("d3")]);
    let statuses: Vec<Value> = records(&h, "wave")
        .await
        .iter()
        .map(|r| r["status"].clone())
        .collect();
    assert_eq!(statuses, vec![json!("failed"), json!("canceled")]);
}

#[tokio::test(start_paused = true)]
async fn acknowledged_twin_updates_wait_for_the_reported_values() {
    let mut h = harness(2, 2, Limits::UNLIMITED);
    let mut desired = Map::new();
    desired.insert("fw".into(), json!("2"));
    let req = JobRequest {
        job_id: "ack".into(),
        kind: JobKind::Twin(TwinUpdate {
            tags: None,
            desired: Some(Arc::new(desired)),
        }),
        query_condition: "*".into(),
        start_time: None,
        max_execution_s: 3600,
        control: JobControl {
            ack_timeout_s: Some(60),
            ..Default::default()
        },
    };
    h.hub.create_job(req).await.unwrap();
    let batch = h.to_dev.recv().await.unwrap();
    assert_eq!(batch.len(), 2);
    let job = h.hub.get_job("ack").await.unwrap();
    assert_eq!(
        stats(&job),
        (2, 0, 0, 2, 0),
        "written, not yet acknowledged"
    );
    // d0 reports the desired value back; d1 reports something else.
    let report = |device, fw: &str| FromDevice::Reported {
        device,
        patch: Arc::new(json!({ "fw": fw })),
        ack_of: None,
    };
    h.from_dev
        .send(vec![report(D0, "2"), report(D1, "1")])
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let job = h.hub.get_job("ack").await.unwrap();
    assert_eq!(stats(&job), (2, 1, 0, 1, 0));
    let job = wait_status(&h, "ack", "completed").await;
    assert_eq!(stats(&job), (2, 1, 1, 0, 0), "d1 timed out at 60 s");
    let recs = records(&h, "ack").await;
    let statuses: Vec<&Value> = recs.iter().map(|r| &r["status"]).collect();
    assert_eq!(statuses, vec!["completed", "failed"]);
}

/// "Job history is retained up to 30 days"
/// (https://learn.microsoft.com/azure/iot-hub/iot-hub-devguide-quotas-throttling#other-limits):
/// an ended job is shown for 30 days after its end, then it is gone (404002, no records). Its
/// id is not reused within the process (fleetsim keeps measurements by job id). In virtual time
/// the month passes at once.
#[tokio::test(start_paused = true)]
async fn ended_jobs_are_kept_30_days_then_gone() {
    let h = harness_on(Clock::start_virtual(), 2, 2, Limits::UNLIMITED);
    let twin_job = |id: &str| JobRequest {
        job_id: id.into(),
        kind: JobKind::Twin(TwinUpdate {
            tags: Some(Arc::new(
                [("ring".to_owned(), json!("canary"))].into_iter().collect(),
            )),
            desired: None,
        }),
        query_condition: "*".into(),
        start_time: None,
        max_execution_s: 60,
        control: Default::default(),
    };
    h.hub.create_job(twin_job("old")).await.unwrap();
    // It ended at most one poll (10 ms) ago.
    wait_status(&h, "old", "completed").await;
    // A virtual run's other tasks sleep through its clock, so that the engine knows not to run
    // ahead of them.
    let month = Duration::from_secs(30 * 86_400);
    let ended = h.clock.now_us();
    h.clock
        .sleep_until(ended + (month - Duration::from_secs(1)).as_micros() as u64)
        .await;
    assert_eq!(h.hub.get_job("old").await.unwrap()["status"], "completed");
    assert_eq!(
        records(&h, "old").await.len(),
        2,
        "its device records are kept too"
    );
    h.clock.sleep_until(h.clock.now_us() + 2_000_000).await;
    let gone = h.hub.get_job("old").await.unwrap_err();
    assert_eq!(gone.code, ErrorCode::JobNotFound);
    assert!(records(&h, "old").await.is_empty());
    let again = h.hub.create_job(twin_job("old")).await.unwrap_err();
    assert_eq!(again.code, ErrorCode::JobAlreadyExists);
    assert!(again
        .to_string()
        .contains("forgotten 30 days after it ended"));
    h.hub.create_job(twin_job("new")).await.unwrap();
    wait_status(&h, "new", "completed").await;
}

/// The in-process link posing as a transport that cannot stamp deliveries (MQTT): the engine
/// then learns of them from receipts.
struct Unstamped(InProcLink);

impl DeviceLink for Unstamped {
    fn send(&mut self, msg: ToDevice) {
        self.0.send(msg);
    }

    fn flush(&mut self) {
        self.0.flush();
    }

    fn stamps_deliveries(&self) -> bool {
        false
    }
}

#[tokio::test(start_paused = true)]
async fn receipts_record_the_deliveries_they_name_once_and_only_when_their_clock_is_trusted() {
    let mut h = harness_link(Clock::start(), 2, 2, Limits::UNLIMITED, |tx| {
        Box::new(Unstamped(InProcLink::new(tx)))
    });
    let desired: Map<String, Value> = [("fw".to_owned(), json!("2"))].into_iter().collect();
    let req = JobRequest {
        job_id: "fw".into(),
        kind: JobKind::Twin(TwinUpdate {
            tags: None,
            desired: Some(Arc::new(desired)),
        }),
        query_condition: "*".into(),
        start_time: None,
        max_execution_s: 60,
        control: Default::default(),
    };
    h.hub.create_job(req).await.unwrap();
    wait_status(&h, "fw", "completed").await;
    let mut versions = Vec::new();
    while versions.len() < 2 {
        for m in h.to_dev.recv().await.unwrap() {
            if let ToDevice::Desired {
                device, version, ..
            } = m
            {
                versions.push((device, version));
            }
        }
    }
    versions.sort_by_key(|&(d, _)| d.get());
    let [(D0, v), (D1, v1)] = versions[..] else {
        panic!("a patch each: {versions:?}")
    };
    assert_eq!(v, v1);
    let at_us = h.clock.now_us();
    let receipt = |device, what| Receipt {
        device,
        what,
        at_us,
    };
    let deliveries = async |h: &Harness| {
        tokio::time::sleep(Duration::from_secs(1)).await;
        h.view
            .borrow()
            .metrics
            .measure(Measure::Delivery)
            .stats
            .count
    };
    // Another version, and a method operation no job has: nothing to record.
    h.from_dev
        .send(vec![FromDevice::Received {
            receipts: vec![
                receipt(D0, Received::Desired(v + 1)),
                receipt(D1, Received::Method(OpId(u64::MAX))),
            ],
            clock: None,
        }])
        .unwrap();
    assert_eq!(deliveries(&h).await, 0);
    // d1's receipt from a clock known only to a second: refused.
    let loose = ClockAgreement {
        offset_us: 0,
        uncertainty_us: 1_000_000,
    };
    h.from_dev
        .send(vec![FromDevice::Received {
            receipts: vec![receipt(D1, Received::Desired(v))],
            clock: Some(loose),
        }])
        .unwrap();
    assert_eq!(deliveries(&h).await, 0);
    // d0's counts, once.
    for _ in 0..2 {
        h.from_dev
            .send(vec![FromDevice::Received {
                receipts: vec![receipt(D0, Received::Desired(v))],
                clock: None,
            }])
            .unwrap();
    }
    assert_eq!(deliveries(&h).await, 1);
}
