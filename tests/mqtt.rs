//! The hub's MQTT device endpoint over real TCP and TLS: rumqttc clients (and raw sockets for
//! protocol violations) against `app::wiring::start` with the endpoint on ephemeral ports.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use fleetsim::app::devices::{self, FleetOptions};
use fleetsim::app::wiring::{self, Running};
use fleetsim::app::wiring::{MqttOptions, Security};
use fleetsim::clock::Clock;
use fleetsim::fleet::keyfile::{self, KeyFile};
use fleetsim::hub::api::{self, Api};
use fleetsim::hub::jobs::{JobKind, JobRequest, MethodCall, TwinUpdate};
use fleetsim::hub::mqtt::session::SUBSCRIBE_GRACE_US;
use fleetsim::hub::mqtt::Listen;
use fleetsim::hub::state::StateDir;
use fleetsim::hub::throttle::{Limits, Model, Tier};
use fleetsim::hub::TwinWrite;
use fleetsim::sas::generate_token;
use fleetsim::sas::{random_key, DeviceKeys};
use fleetsim::scenario::{self};
use rumqttc::mqttbytes::v4::{Connect, Login, Packet, Publish, Subscribe};
use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, EventLoop,
    MqttOptions as ClientOptions, QoS, TlsConfiguration, Transport,
};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SCENARIO: &str = r#"
name = "mqtt-test"
duration = "10m"
[hub]
transport = "mqtt"
[[cohort]]
name = "d"
count = 8
id_prefix = "d"
desired = { fw = "1" }
"#;

struct TestHub {
    running: Running,
    security: Security,
    plain: std::net::SocketAddr,
    tls: std::net::SocketAddr,
    ca: Vec<u8>,
    clock: Clock,
    dir: std::path::PathBuf,
}

impl Drop for TestHub {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn start() -> TestHub {
    start_with(Limits {
        tier: Tier::Unlimited,
        units: 1,
        ..Limits::UNLIMITED
    })
    .await
}

async fn start_with(limits: Limits) -> TestHub {
    let dir = std::env::temp_dir().join(format!(
        "fleetsim-mqtt-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    let clock = Clock::start();
    let scenario = scenario::parse(SCENARIO, "mqtt-test.toml").unwrap();
    let security = Security::from_state_dir(&dir, clock.clone(), true).unwrap();
    let opts = MqttOptions {
        listen: Listen {
            plain: Some("127.0.0.1:0".parse().unwrap()),
            tls: Some("127.0.0.1:0".parse().unwrap()),
        },
        external_fleet: true,
        receipts: None,
    };
    let running = wiring::start(
        &scenario,
        1,
        fleetsim::shard::Shard::ALL,
        clock.clone(),
        limits,
        &opts,
        Some(security.clone()),
    )
    .await
    .unwrap();
    let (plain, tls) = running.mqtt_addrs();
    let ca = std::fs::read(security.ca.as_ref().unwrap()).unwrap();
    TestHub {
        running,
        security,
        plain: plain.unwrap(),
        tls: tls.unwrap(),
        ca,
        clock,
        dir,
    }
}

impl TestHub {
    fn token(&self, id: &str, valid_s: i64) -> String {
        let key = self.security.auth.device_keys(id).primary_key;
        let now = self.clock.wall_at(self.clock.now_us()).unix_timestamp();
        generate_token(
            &format!("localhost/devices/{id}"),
            &key,
            None,
            (now + valid_s) as u64,
        )
        .unwrap()
    }

    fn options(&self, id: &str, password: String) -> ClientOptions {
        let mut o = ClientOptions::new(id, "127.0.0.1", self.plain.port());
        o.set_credentials(format!("localhost/{id}/?api-version=2021-04-12"), password);
        o.set_keep_alive(Duration::from_secs(30));
        o
    }

    /// A connected rumqttc client whose event loop is polled by `pump`.
    async fn device(
        &self,
        id: &str,
    ) -> (AsyncClient, tokio::sync::mpsc::UnboundedReceiver<Publish>) {
        let (client, eventloop) = AsyncClient::new(self.options(id, self.token(id, 3600)), 16);
        (client, pump(eventloop).await)
    }

    async fn twin(&self, id: &str) -> Value {
        self.running.hub.get_twin(id).await.unwrap()
    }

    /// Serves the service REST API over HTTP for this test; answers a function that invokes a
    /// direct method over it: (HTTP status, `iothub-errorcode`, body).
    async fn rest(&self) -> impl Fn(&str, Value) -> RestCall {
        let state = StateDir::open(&self.dir).unwrap();
        let auth = self.security.auth.clone();
        let app = api::router(Api::new(
            self.running.hub.clone(),
            auth.clone(),
            state,
            self.clock.clone(),
            self.running.limiter.clone(),
            self.running.view.clone(),
        ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(api::serve(listener, None, app, Default::default()));
        let owner = auth.policy("iothubowner").unwrap().primary_key.clone();
        let now = self.clock.wall_at(self.clock.now_us()).unix_timestamp() as u64;
        let token = generate_token("localhost", &owner, Some("iothubowner"), now + 600).unwrap();
        move |device: &str, call: Value| {
            let request = reqwest::Client::new()
                .post(format!(
                    "{base}/twins/{device}/methods?api-version=2021-04-12"
                ))
                .header("Authorization", &token)
                .json(&call)
                .send();
            Box::pin(async move {
                let r = request.await.unwrap();
                let code = r
                    .headers()
                    .get("iothub-errorcode")
                    .map(|v| v.to_str().unwrap().to_owned());
                (r.status().as_u16(), code, r.json().await.unwrap())
            })
        }
    }
}

/// A direct method call over REST in flight: (HTTP status, `iothub-errorcode`, body).
type RestCall =
    std::pin::Pin<Box<dyn std::future::Future<Output = (u16, Option<String>, Value)> + Send>>;

/// Polls `eventloop` until its CONNACK, then forwards every incoming publish.
async fn pump(mut eventloop: EventLoop) -> tokio::sync::mpsc::UnboundedReceiver<Publish> {
    match eventloop.poll().await {
        Ok(Event::Incoming(Packet::ConnAck(_))) => {}
        other => panic!("expected CONNACK, got {other:?}"),
    }
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(ev) = eventloop.poll().await {
            if let Event::Incoming(Packet::Publish(p)) = ev {
                if tx.send(p).is_err() {
                    return;
                }
            }
        }
    });
    rx
}

async fn next(rx: &mut tokio::sync::mpsc::UnboundedReceiver<Publish>) -> Publish {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("a publish within 10 s")
        .expect("the connection is alive")
}

async fn refused(hub: &TestHub, opts: ClientOptions) -> ConnectReturnCode {
    let (_c, mut el) = AsyncClient::new(opts, 4);
    match el.poll().await {
        Err(ConnectionError::ConnectionRefused(code)) => code,
        other => panic!("expected a refusal, got {other:?} ({})", hub.plain),
    }
}

async fn eventually(mut check: impl AsyncFnMut() -> bool, what: &str) {
    for _ in 0..100 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what} did not happen within 5 s");
}

#[tokio::test]
async fn bad_credentials_are_not_authorized() {
    let hub = start().await;
    let wrong = hub.token("d1", 3600); // d1's token presented by d0
    assert_eq!(
        refused(&hub, hub.options("d0", wrong)).await,
        ConnectReturnCode::NotAuthorized
    );
    let expired = hub.token("d0", -60);
    assert_eq!(
        refused(&hub, hub.options("d0", expired)).await,
        ConnectReturnCode::NotAuthorized
    );
    let unknown = hub.token("nobody", 3600);
    assert_eq!(
        refused(&hub, hub.options("nobody", unknown)).await,
        ConnectReturnCode::NotAuthorized
    );
    assert_eq!(
        refused(
            &hub,
            hub.options("d0", "SharedAccessSignature nonsense".into())
        )
        .await,
        ConnectReturnCode::NotAuthorized
    );
    // A policy with DeviceConnect may connect any device.
    let owner = hub
        .security
        .auth
        .policy("iothubowner")
        .unwrap()
        .primary_key
        .clone();
    let now = hub.clock.wall_at(hub.clock.now_us()).unix_timestamp() as u64;
    let policy = generate_token("localhost", &owner, Some("iothubowner"), now + 600).unwrap();
    let (_c, el) = AsyncClient::new(hub.options("d2", policy), 4);
    let _rx = pump(el).await;
    assert_eq!(hub.twin("d0").await["connectionState"], "Disconnected");
}

#[tokio::test]
async fn a_method_job_reaches_the_device_and_records_its_answer() {
    let hub = start().await;
    let (client, mut rx) = hub.device("d3").await;
    client
        .subscribe("$iothub/methods/POST/#", QoS::AtLeastOnce)
        .await
        .unwrap();
    eventually(
        async || hub.twin("d3").await["connectionState"] == "Connected",
        "connect",
    )
    .await;
    let job = JobRequest {
        job_id: "reboot-d3".into(),
        kind: JobKind::Method(MethodCall {
            name: "reboot".into(),
            payload: Arc::new(json!({"delay": 1})),
            response_timeout_s: 10,
            connect_timeout_s: 5,
        }),
        query_condition: "deviceId = 'd3'".into(),
        start_time: None,
        max_execution_s: 60,
        control: Default::default(),
    };
    hub.running.hub.create_job(job).await.unwrap();
    let req = next(&mut rx).await;
    let rid = req
        .topic
        .strip_prefix("$iothub/methods/POST/reboot/?$rid=")
        .expect(&req.topic);
    assert_eq!(
        serde_json::from_slice::<Value>(&req.payload).unwrap(),
        json!({"delay": 1})
    );
    client
        .publish(
            format!("$iothub/methods/res/201/?$rid={rid}"),
            QoS::AtLeastOnce,
            false,
            r#"{"rebooted":true}"#,
        )
        .await
        .unwrap();
    eventually(
        async || hub.running.hub.get_job("reboot-d3").await.unwrap()["status"] == "completed",
        "job completion",
    )
    .await;
    let rows = hub
        .running
        .hub
        .query("SELECT * FROM devices.jobs WHERE devices.jobs.jobId = 'reboot-d3'")
        .await
        .unwrap();
    assert_eq!(
        rows[0]["outcome"]["deviceMethodResponse"],
        json!({"status": 201, "payload": {"rebooted": true}})
    );
}

const REQUESTS_IN_BURST: usize = 200;

/// Twice S1's twin-read allowance in one burst from one device, under each throttle model.
/// Reject refuses part of it with 429; shaping (IoT Hub's documented behaviour:
/// https://learn.microsoft.com/azure/iot-hub/iot-hub-devguide-quotas-throttling#traffic-shaping,
/// "the first few of these requests are processed immediately ... placing the requests in a
/// queue and processed at the limit rate") serves all of it, the part past the burst at the
/// limit's rate, so the last answer comes about a second after the first.
async fn twin_burst(throttle: Model) -> (Vec<String>, Duration) {
    // S1: 100 twin reads and 50 twin updates per second, hub-wide, devices included.
    let hub = start_with(Limits {
        tier: Tier::S1,
        units: 1,
        throttle,
    })
    .await;
    const REQUESTS: usize = REQUESTS_IN_BURST;
    let (client, mut rx) = hub.device("d4").await;
    client
        .subscribe("$iothub/twin/res/#", QoS::AtMostOnce)
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    for k in 0..REQUESTS {
        let topic = format!("$iothub/twin/GET/?$rid={k}");
        client
            .publish(topic, QoS::AtMostOnce, false, " ")
            .await
            .unwrap();
    }
    let mut statuses = Vec::new();
    for _ in 0..REQUESTS {
        let got = next(&mut rx).await;
        statuses.push(got.topic.split('/').nth(3).unwrap_or_default().to_owned());
    }
    (statuses, started.elapsed())
}

#[tokio::test]
async fn device_twin_traffic_is_metered_by_the_tier_refused_or_shaped() {
    // Reject: however slowly this machine answers (the bucket refills 100 a second), part of
    // the burst is refused unless the burst takes over a second.
    let (statuses, _) = twin_burst(Model::Reject).await;
    let ok = statuses.iter().filter(|s| *s == "200").count();
    let throttled = statuses.iter().filter(|s| *s == "429").count();
    assert!(ok >= 100, "the allowance is served: {statuses:?}");
    assert!(throttled >= 1, "past it, 429: {statuses:?}");
    assert_eq!(ok + throttled, REQUESTS_IN_BURST, "{statuses:?}");
    // Shape: every request is answered 200; the 100 past the burst wait their turn at 100/s.
    let (statuses, took) = twin_burst(Model::Shape).await;
    assert!(statuses.iter().all(|s| s == "200"), "{statuses:?}");
    assert!(
        took >= Duration::from_millis(950),
        "100 requests past the burst at 100/s take about a second, not {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twin_get_reported_patch_and_desired_notifications() {
    let hub = start().await;
    let (client, mut rx) = hub.device("d4").await;
    client
        .subscribe("$iothub/twin/res/#", QoS::AtLeastOnce)
        .await
        .unwrap();
    client
        .subscribe("$iothub/twin/PATCH/properties/desired/#", QoS::AtMostOnce)
        .await
        .unwrap();
    client
        .publish("$iothub/twin/GET/?$rid=abc", QoS::AtMostOnce, false, " ")
        .await
        .unwrap();
    let got = next(&mut rx).await;
    assert_eq!(got.topic, "$iothub/twin/res/200/?$rid=abc");
    let doc: Value = serde_json::from_slice(&got.payload).unwrap();
    assert_eq!(doc["desired"], json!({"fw": "1", "$version": 1}));
    assert_eq!(doc["reported"]["$version"], 1);

    client
        .publish(
            "$iothub/twin/PATCH/properties/reported/?$rid=7",
            QoS::AtLeastOnce,
            false,
            r#"{"fw":"1","temp":21}"#,
        )
        .await
        .unwrap();
    let got = next(&mut rx).await;
    assert_eq!(got.topic, "$iothub/twin/res/204/?$rid=7&$version=2");
    assert!(got.payload.is_empty());
    assert_eq!(hub.twin("d4").await["properties"]["reported"]["temp"], 21);

    client
        .publish(
            "$iothub/twin/PATCH/properties/reported/?$rid=8",
            QoS::AtMostOnce,
            false,
            "[1]",
        )
        .await
        .unwrap();
    assert_eq!(next(&mut rx).await.topic, "$iothub/twin/res/400/?$rid=8");

    // A REST-style twin patch notifies the device.
    let body = json!({"properties": {"desired": {"fw": "2"}}});
    hub.running
        .hub
        .write_twin("d4", TwinWrite::Patch, body, None)
        .await
        .unwrap();
    let got = next(&mut rx).await;
    assert_eq!(
        got.topic,
        "$iothub/twin/PATCH/properties/desired/?$version=2"
    );
    assert_eq!(
        serde_json::from_slice::<Value>(&got.payload).unwrap(),
        json!({"fw": "2", "$version": 2})
    );

    // And so does a twin-update job.
    let job = JobRequest {
        job_id: "fw3".into(),
        kind: JobKind::Twin(TwinUpdate {
            tags: None,
            desired: Some(Arc::new(json!({"fw": "3"}).as_object().unwrap().clone())),
        }),
        query_condition: "deviceId = 'd4'".into(),
        start_time: None,
        max_execution_s: 60,
        control: Default::default(),
    };
    hub.running.hub.create_job(job).await.unwrap();
    let got = next(&mut rx).await;
    assert_eq!(
        got.topic,
        "$iothub/twin/PATCH/properties/desired/?$version=3"
    );
}

/// A raw MQTT connection: CONNECT accepted, then whatever the test sends.
async fn raw(hub: &TestHub, id: &str, keep_alive: u16) -> TcpStream {
    raw_from(
        hub,
        id,
        keep_alive,
        tokio::net::TcpSocket::new_v4().unwrap(),
    )
    .await
}

/// [`raw`] from `socket` (set up as the test needs).
async fn raw_from(
    hub: &TestHub,
    id: &str,
    keep_alive: u16,
    socket: tokio::net::TcpSocket,
) -> TcpStream {
    let mut connect = Connect::new(id);
    connect.keep_alive = keep_alive;
    connect.login = Some(Login::new(
        format!("localhost/{id}/?api-version=2021-04-12"),
        hub.token(id, 600),
    ));
    let mut buf = BytesMut::new();
    Packet::Connect(connect).write(&mut buf, 1 << 20).unwrap();
    let mut s = socket.connect(hub.plain).await.unwrap();
    s.write_all(&buf).await.unwrap();
    let mut ack = [0u8; 4];
    s.read_exact(&mut ack).await.unwrap();
    assert_eq!(ack, [0x20, 2, 0, 0], "CONNACK accepted");
    s
}

async fn closed_within(s: &mut TcpStream, secs: u64) -> bool {
    let mut byte = [0u8; 64];
    loop {
        match tokio::time::timeout(Duration::from_secs(secs), s.read(&mut byte)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

#[tokio::test]
async fn protocol_violations_close_only_their_connection() {
    let hub = start().await;
    let (client, mut rx) = hub.device("d5").await;
    client
        .subscribe("$iothub/twin/res/#", QoS::AtMostOnce)
        .await
        .unwrap();

    // QoS 2 is refused by disconnecting.
    let mut s = raw(&hub, "d6", 30).await;
    let mut buf = BytesMut::new();
    let mut p = Publish::new(
        "devices/d6/messages/events/",
        QoS::ExactlyOnce,
        b"x".to_vec(),
    );
    p.pkid = 1;
    Packet::Publish(p).write(&mut buf, 1 << 20).unwrap();
    s.write_all(&buf).await.unwrap();
    assert!(
        closed_within(&mut s, 5).await,
        "QoS 2 closes the connection"
    );

    // Garbage closes that connection.
    let mut s = raw(&hub, "d6", 30).await;
    s.write_all(&[0xF0, 0xFF, 0xFF, 0xFF, 0xFF, 0x01])
        .await
        .unwrap();
    assert!(
        closed_within(&mut s, 5).await,
        "a malformed packet closes the connection"
    );

    // Another device's topic closes it too.
    let mut s = raw(&hub, "d6", 30).await;
    let mut buf = BytesMut::new();
    Packet::Publish(Publish::new(
        "devices/d5/messages/events/",
        QoS::AtMostOnce,
        b"x".to_vec(),
    ))
    .write(&mut buf, 1 << 20)
    .unwrap();
    s.write_all(&buf).await.unwrap();
    assert!(
        closed_within(&mut s, 5).await,
        "a foreign topic closes the connection"
    );

    // An oversized packet is refused from its header.
    let mut s = raw(&hub, "d6", 30).await;
    s.write_all(&[0x30, 0xFF, 0xFF, 0xFF, 0x7F]).await.unwrap();
    assert!(
        closed_within(&mut s, 5).await,
        "an oversized packet closes the connection"
    );

    // Keep-alive: silent for 1.5 × 1 s, the hub closes.
    let mut s = raw(&hub, "d6", 1).await;
    assert!(
        !closed_within(&mut s, 1).await,
        "still open inside the keep-alive"
    );
    assert!(
        closed_within(&mut s, 3).await,
        "closed after 1.5 keep-alive periods"
    );

    // Meanwhile d5 was untouched.
    client
        .publish("$iothub/twin/GET/?$rid=1", QoS::AtMostOnce, false, "")
        .await
        .unwrap();
    assert_eq!(next(&mut rx).await.topic, "$iothub/twin/res/200/?$rid=1");
    eventually(
        async || hub.twin("d6").await["connectionState"] == "Disconnected",
        "d6 disconnected",
    )
    .await;
    assert_eq!(hub.twin("d5").await["connectionState"], "Connected");
}

#[tokio::test]
async fn a_device_that_stops_reading_holds_up_no_one() {
    let hub = start().await;
    // d6 asks for its twin thousands of times with a tiny receive window and reads nothing:
    // the answers (megabytes) back up in the hub, which must keep them for d6 alone.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut s = raw_from(&hub, "d6", 0, socket).await;
    const ASKS: usize = 10_000;
    let mut buf = BytesMut::new();
    let mut sub = Subscribe::new("$iothub/twin/res/#", QoS::AtMostOnce);
    sub.pkid = 1;
    Packet::Subscribe(sub).write(&mut buf, 1 << 20).unwrap();
    for i in 0..ASKS {
        let get = format!("$iothub/twin/GET/?$rid={i}");
        Packet::Publish(Publish::new(get, QoS::AtMostOnce, vec![]))
            .write(&mut buf, 1 << 20)
            .unwrap();
    }
    s.write_all(&buf).await.unwrap();

    // Meanwhile d5 is served as usual.
    let (client, mut rx) = hub.device("d5").await;
    client
        .subscribe("$iothub/twin/res/#", QoS::AtMostOnce)
        .await
        .unwrap();
    client
        .publish("$iothub/twin/GET/?$rid=x", QoS::AtMostOnce, false, "")
        .await
        .unwrap();
    assert_eq!(next(&mut rx).await.topic, "$iothub/twin/res/200/?$rid=x");

    // Then d6 reads: every answer is there, whole and in order.
    let mut rbuf = BytesMut::new();
    let mut answered = 0;
    let mut backlog = 0;
    while answered < ASKS {
        match Packet::read(&mut rbuf, 1 << 20) {
            Ok(Packet::Publish(p)) => {
                assert_eq!(p.topic, format!("$iothub/twin/res/200/?$rid={answered}"));
                let twin: Value = serde_json::from_slice(&p.payload).unwrap();
                assert_eq!(twin["desired"]["fw"], "1", "{twin}");
                backlog += p.payload.len();
                answered += 1;
            }
            Ok(_) => {}
            Err(_) => {
                let n = tokio::time::timeout(Duration::from_secs(10), s.read_buf(&mut rbuf))
                    .await
                    .expect("the hub keeps sending")
                    .unwrap();
                assert!(n > 0, "d6 still connected after {answered} answers");
            }
        }
    }
    // Far more than d6's 8 KB window and the hub's default 16 KB send buffer.
    assert!(backlog > 512 << 10, "{backlog} bytes of answers");
}

#[tokio::test]
async fn a_new_connection_replaces_the_old_one() {
    let hub = start().await;
    let mut first = raw(&hub, "d7", 30).await;
    let (client, mut rx) = hub.device("d7").await;
    assert!(
        closed_within(&mut first, 5).await,
        "the first connection is closed"
    );
    client
        .subscribe("$iothub/twin/res/#", QoS::AtMostOnce)
        .await
        .unwrap();
    client
        .publish("$iothub/twin/GET/?$rid=2", QoS::AtMostOnce, false, "")
        .await
        .unwrap();
    assert_eq!(next(&mut rx).await.topic, "$iothub/twin/res/200/?$rid=2");
    assert_eq!(hub.twin("d7").await["connectionState"], "Connected");
}

#[tokio::test]
async fn tls_with_the_hub_ca() {
    let hub = start().await;
    // rumqttc's TLS builds its config with the process-wide provider: choose ring, as the hub.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut o = ClientOptions::new("d1", "localhost", hub.tls.port());
    o.set_credentials("localhost/d1/?api-version=2021-04-12", hub.token("d1", 600));
    o.set_transport(Transport::Tls(TlsConfiguration::Simple {
        ca: hub.ca.clone(),
        alpn: None,
        client_auth: None,
    }));
    let (client, el) = AsyncClient::new(o, 8);
    let mut rx = pump(el).await;
    client
        .subscribe("$iothub/twin/res/#", QoS::AtLeastOnce)
        .await
        .unwrap();
    client
        .publish("$iothub/twin/GET/?$rid=t", QoS::AtMostOnce, false, "")
        .await
        .unwrap();
    assert_eq!(next(&mut rx).await.topic, "$iothub/twin/res/200/?$rid=t");
}

#[tokio::test]
async fn direct_methods_need_the_methods_subscription_within_the_grace() {
    let hub = start().await;
    let invoke = hub.rest().await;
    // d1 connects and never subscribes to methods; d2 subscribes a second after connecting.
    let (_d1, _rx1) = hub.device("d1").await;
    let (d2, mut rx2) = hub.device("d2").await;
    let connected = tokio::time::Instant::now();
    let call = json!({"methodName": "ping", "payload": {"n": 1},
        "responseTimeoutInSeconds": 5, "connectTimeoutInSeconds": 0});
    let to_d1 = tokio::spawn(invoke("d1", call.clone()));
    let to_d2 = tokio::spawn(invoke("d2", call));
    tokio::time::sleep(Duration::from_secs(1)).await;
    d2.subscribe("$iothub/methods/POST/#", QoS::AtMostOnce)
        .await
        .unwrap();
    let req = next(&mut rx2).await;
    let rid = req
        .topic
        .strip_prefix("$iothub/methods/POST/ping/?$rid=")
        .expect(&req.topic);
    d2.publish(
        format!("$iothub/methods/res/200/?$rid={rid}"),
        QoS::AtMostOnce,
        false,
        r#"{"pong":1}"#,
    )
    .await
    .unwrap();
    let (status, _, body) = to_d2.await.unwrap();
    assert_eq!(
        (status, body),
        (200, json!({"status": 200, "payload": {"pong": 1}}))
    );

    let (status, code, body) = to_d1.await.unwrap();
    let waited = connected.elapsed();
    assert_eq!(
        (status, code.as_deref()),
        (404, Some("DeviceNotOnline")),
        "{body}"
    );
    assert!(body["Message"]
        .as_str()
        .unwrap()
        .contains("$iothub/methods/POST/#"));
    // It failed at the end of the grace after d1 connected, not at the 5 s response timeout.
    let grace = Duration::from_micros(SUBSCRIBE_GRACE_US);
    assert!(
        waited > grace - Duration::from_millis(500) && waited < grace + Duration::from_secs(1),
        "failed after {waited:?}"
    );
}

impl TestHub {
    /// The scenario, as a file `fleetsim keys` and `fleetsim devices` can read.
    fn scenario_file(&self) -> std::path::PathBuf {
        let path = self.dir.join("mqtt-test.toml");
        std::fs::write(&path, SCENARIO).unwrap();
        path
    }

    /// `fleetsim devices` options for the scenario's 8 devices against the plain endpoint,
    /// with no usable state directory: the keys must come from `keys` or `connection_string`.
    fn fleet_options(&self) -> FleetOptions {
        FleetOptions {
            hub: Some(format!("127.0.0.1:{}", self.plain.port())),
            tls: false,
            ca: None,
            shard: fleetsim::shard::Shard::ALL,
            state_dir: self.dir.join("no-state-here"),
            keys: None,
            connection_string: None,
            sources: 1,
            seed: None,
            ramp: Some(10_000),
            stop_after: None,
            receipts: None,
        }
    }

    fn connected(&self) -> u64 {
        self.running.view.borrow().connected
    }
}

/// Runs the fleet until the hub sees all 8 devices connected, then stops it; answers its
/// counters.
async fn run_fleet_until_connected(
    hub: &TestHub,
    opts: FleetOptions,
) -> Arc<fleetsim::fleet::mqtt::FleetStatus> {
    let scenario = scenario::parse(SCENARIO, "mqtt-test.toml").unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let fleet = tokio::spawn({
        let stop = stop.clone();
        async move { devices::run_fleet(&scenario, &opts, stop).await }
    });
    eventually(async || hub.connected() == 8, "all 8 devices connected").await;
    stop.cancel();
    fleet.await.unwrap().unwrap()
}

#[tokio::test]
async fn fleetsim_devices_signs_with_the_keys_fleetsim_keys_exported() {
    let hub = start().await;
    let scenario = hub.scenario_file();
    let keys = hub.dir.join("keys.csv");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fleetsim"))
        .args(["keys", "--scenario"])
        .arg(&scenario)
        .arg("--state-dir")
        .arg(&hub.dir)
        .arg("--out")
        .arg(&keys)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("wrote 8 device identities"), "{stderr}");
    assert_eq!(KeyFile::load(&keys).unwrap().len(), 8);

    // Over TLS with no --ca and no state directory: the hub's CA is the "system" root here.
    let ca = hub.dir.join("ca.pem");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_fleetsim"))
        .args(["devices", "--scenario"])
        .arg(&scenario)
        .arg("--keys")
        .arg(&keys)
        .args(["--hub", &format!("localhost:{}", hub.tls.port()), "--tls"])
        .arg("--state-dir")
        .arg(hub.dir.join("no-state-here"))
        .args(["--for", "20s"])
        .env("SSL_CERT_FILE", &ca)
        .env_remove("SSL_CERT_DIR")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    eventually(async || hub.connected() == 8, "all 8 devices connected").await;
    // SAFETY: kill(2) on our own child's pid, with a valid signal.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(last.contains("connects 8 | failed attempts 0"), "{stderr}");
}

#[tokio::test]
async fn a_wrong_or_incomplete_key_file_is_refused() {
    let hub = start().await;
    let path = hub.dir.join("wrong.csv");
    let mut text = format!("{}\n", keyfile::HEADER);
    for i in 0..8 {
        let keys = DeviceKeys {
            primary_key: random_key(),
            secondary_key: random_key(),
        };
        text += &format!("{}\n", keyfile::line(&format!("d{i}"), &keys));
    }
    std::fs::write(&path, &text).unwrap();
    let scenario = scenario::parse(SCENARIO, "mqtt-test.toml").unwrap();
    let opts = FleetOptions {
        keys: Some(path.clone()),
        stop_after: Some(Duration::from_millis(500)),
        ..hub.fleet_options()
    };
    let status = devices::run_fleet(&scenario, &opts, Default::default())
        .await
        .unwrap();
    let count = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(count(&status.connects), 0);
    assert!(count(&status.failed) >= 8, "{}", status.line());
    assert_eq!(hub.connected(), 0);

    // A device missing from the file stops the fleet before it connects, naming both.
    let short: String = text
        .lines()
        .filter(|l| !l.starts_with("d5,"))
        .map(|l| l.to_owned() + "\n")
        .collect();
    std::fs::write(&path, short).unwrap();
    let e = devices::run_fleet(&scenario, &opts, Default::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("device 'd5' is not in key file") && e.contains("wrong.csv"),
        "{e}"
    );
}

#[tokio::test]
async fn a_fleet_signs_with_a_device_connect_policy() {
    let hub = start().await;
    let key = &hub.security.auth.policy("device").unwrap().primary_key;
    let connection_string =
        format!("HostName=localhost;SharedAccessKeyName=device;SharedAccessKey={key}");
    let opts = FleetOptions {
        connection_string: Some(connection_string.parse().unwrap()),
        ..hub.fleet_options()
    };
    let status = run_fleet_until_connected(&hub, opts).await;
    assert_eq!(
        status.connects.load(std::sync::atomic::Ordering::Relaxed),
        8,
        "{}",
        status.line()
    );
    assert_eq!(status.failed.load(std::sync::atomic::Ordering::Relaxed), 0);
}

/// Each source of the fleet's credentials signs a CONNECT password the hub's authority accepts.
#[test]
fn each_credentials_source_signs_a_token_the_hub_accepts() {
    use fleetsim::fleet::credentials::{Credentials, PolicyKey};
    use fleetsim::hub::auth::{default_policies, Authority};
    let authority = Arc::new(Authority::new(
        vec!["localhost".into()],
        default_policies(),
        b"secret".to_vec(),
        std::collections::HashMap::new(),
    ));
    let now = time::OffsetDateTime::from_unix_timestamp(1_000).unwrap();
    let own = authority.derived_keys("d1").primary_key;
    let file = KeyFile::parse(&format!("d1,{own}\n"), std::path::Path::new("k.csv")).unwrap();
    let device = authority.policy("device").unwrap().primary_key.clone();
    let policy = PolicyKey {
        host_name: "localhost".into(),
        name: "device".into(),
        key: device,
    };
    for credentials in [
        Credentials::Hub(authority.keyring()),
        Credentials::Keys(Arc::new(file)),
        Credentials::Policy(policy),
    ] {
        let token = credentials.password("localhost", "d1", 2_000).unwrap();
        assert_eq!(
            authority.verify_device_token(&token, "localhost", "d1", now),
            Ok(()),
            "{credentials:?}"
        );
    }
}
