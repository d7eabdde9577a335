//! Entry points for the cargo-fuzz targets in `fuzz/` (issue 16): each takes the bytes a client,
//! a device or a scenario author could send, drives them through the code that reads them in the
//! hub, and panics only if that code does or if an invariant it promises breaks. Not an API:
//! hidden from the docs, and nothing else in the crate uses it. See README, "Reliability".

use std::sync::Arc;

use serde_json::Value;

use crate::clock::Clock;
use crate::hub::jobs::{Job, JobRequest};
use crate::hub::mqtt::session::{Action, Session};
use crate::hub::mqtt::MAX_PACKET;
use crate::hub::twin::{self, Object, Twin};
use crate::ids::DeviceIdx;
use crate::link::{OpId, ToDevice};
use crate::mqtt::frames::Frames;
use crate::query::{parse_condition, parse_query};
use crate::scenario::build;
use crate::shard::Shard;

/// Query text: no input may panic the parser; whatever parses prints back to the same tree,
/// and evaluating, projecting and planning it over a twin do not panic either.
pub fn query(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let twin = serde_json::json!({
        "deviceId": "d1",
        "status": "enabled",
        "tags": {"building": "43", "floor": 2, "none": null},
        "properties": {"reported": {"temp": 21.5, "on": true, "fw": "1.0"}},
    });
    if let Ok(query) = parse_query(text) {
        assert_eq!(parse_query(&query.to_string()), Ok(query.clone()));
        let rows = [&twin]
            .into_iter()
            .filter(|d| query.condition().matches(*d));
        let _ = query.project(rows);
        let _ = query.condition().plan();
    }
    if let Ok(condition) = parse_condition(text) {
        assert_eq!(
            parse_condition(&condition.to_string()),
            Ok(condition.clone())
        );
        let _ = condition.matches(&twin);
        let _ = condition.plan();
    }
}

/// A job request body as `PUT /jobs/v2/{id}` gets it: parsed and checked with and without the
/// path's id, and every request that passes is created as the engine creates jobs and printed
/// as `GET /jobs/v2/{id}` prints it (the path of the year-10000 panic of issue 16).
pub fn job_request(data: &[u8]) {
    let Ok(body) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let clock = Clock::start();
    let path_id = body.get("jobId").and_then(Value::as_str).map(str::to_owned);
    for path in [None, path_id.as_deref(), Some("other")] {
        let Ok(request) = JobRequest::from_json(&body, path) else {
            continue;
        };
        let job = Job::new(request, &clock, 0);
        let json = job.to_json(&clock);
        assert_eq!(json["jobId"].as_str(), Some(job.request.job_id.as_str()));
        let _ = clock.iso_at(job.expires_us());
    }
}

/// A twin document as `PATCH` and `PUT /twins/{id}` and a device's reported patch give it: its
/// `tags`, `properties.desired` and `properties.reported` applied as patches, then tags and
/// desired as a replacement. Whatever a write accepts leaves sections within IoT Hub's limits,
/// and versions move by one per accepted write.
pub fn twin_patches(data: &[u8]) {
    let Ok(Value::Object(doc)) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let clock = Clock::start();
    let object = |v: Option<&Value>| match v {
        Some(Value::Object(o)) => Some(o.clone()),
        _ => None,
    };
    let tags = object(doc.get("tags"));
    let props = doc.get("properties");
    let desired = object(props.and_then(|p| p.get("desired")));
    let reported = object(props.and_then(|p| p.get("reported")));
    let initial = Arc::new(Object::new());
    let mut t = Twin::new(initial.clone(), initial.clone(), initial);
    let mut writes = 0;
    if let Some(p) = &tags {
        writes += u64::from(t.patch_tags(p, 1).is_ok());
    }
    if let Some(p) = &desired {
        writes += u64::from(t.patch_desired(p, 2).is_ok());
    }
    if let Some(p) = &reported {
        writes += u64::from(t.patch_reported(p, 3).is_ok());
    }
    if t.replace(tags.unwrap_or_default(), desired.unwrap_or_default(), 4)
        .is_ok()
    {
        writes += 1;
    }
    assert_eq!(t.version, 1 + writes, "one version per accepted write");
    twin::validate_section(&t.tags, "tags", twin::TAGS_LIMIT).expect("tags within limits");
    twin::validate_section(&t.desired.props, "desired", twin::DESIRED_LIMIT)
        .expect("desired within limits");
    twin::validate_section(&t.reported.props, "reported", twin::REPORTED_LIMIT)
        .expect("reported within limits");
    let _ = (
        t.desired.to_json(&clock),
        t.reported.to_device_json(),
        t.etag(),
    );
}

/// Bytes from a device's connection after CONNECT, framed as the hub's MQTT endpoint frames
/// them and fed to its session state machine, interleaved with the hub's own traffic: after
/// each packet a method request and a desired patch arrive and half a second passes. The
/// packets the session answers with are encoded as the pump would write them.
pub fn mqtt_session(data: &[u8]) {
    let mut frames = Frames::new(MAX_PACKET);
    frames.rbuf.extend_from_slice(data);
    let device = DeviceIdx::new(0);
    let mut session = Session::new(device, "fuzz-1".into(), 0);
    let mut out = Vec::new();
    let mut now = 0;
    for n in 0u32.. {
        let packet = match frames.parse() {
            Ok(Some(packet)) => packet,
            Ok(None) | Err(_) => break,
        };
        if session.on_packet(packet, now, &mut out).is_err() {
            break;
        }
        session.on_hub(
            ToDevice::Method {
                op: OpId::new(1, n),
                device,
                method: "reboot".into(),
                payload: Arc::new(Value::Null),
                connect_deadline: now + 1_000_000,
            },
            now,
            &mut out,
        );
        session.on_hub(
            ToDevice::Desired {
                op: Some(OpId::new(2, n)),
                device,
                version: u64::from(n) + 2,
                patch: Arc::new(serde_json::json!({"fw": n})),
            },
            now,
            &mut out,
        );
        now += 500_000;
        session.on_time(now, &mut out);
        perform(&mut frames, &mut out);
    }
    session.close(&mut out);
    perform(&mut frames, &mut out);
}

/// Writes the packets among `actions` as the pump would, and forgets the rest.
fn perform(frames: &mut Frames, actions: &mut Vec<Action>) {
    for action in actions.drain(..) {
        if let Action::Send(packet) = action {
            frames.queue(&packet);
        }
    }
    let written = frames.wbuf.len();
    frames.written(written);
}

/// A scenario file's text: read and validated as `fleetsim validate` does; a valid scenario's
/// jobs are planned, and its registry built when it has at most 1,000 devices.
pub fn scenario(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(scenario) = crate::scenario::parse(text, "fuzz.toml") else {
        return;
    };
    let plan = build::planned_jobs(&scenario);
    assert!(plan.windows(2).all(|w| w[0].create_at <= w[1].create_at));
    let devices = scenario
        .cohorts
        .iter()
        .fold(0u64, |n, c| n.saturating_add(c.count));
    if devices <= 1_000 {
        let registry = build::registry(&scenario, Clock::start(), Shard::ALL);
        assert_eq!(registry.len() as u64, devices);
    }
}
