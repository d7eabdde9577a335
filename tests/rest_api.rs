//! The service REST API over real TCP (HTTP and HTTPS), hosting the `sdk-hub` fixture fleet:
//! every endpoint, and every failure the spec lists with its status, `iothub-errorcode` and
//! IoT Hub error body.

use std::sync::Arc;
use std::time::Duration;

use fleetsim::app::wiring::{self, MqttOptions};
use fleetsim::clock::Clock;
use fleetsim::hub::api::{self, Api};
use fleetsim::hub::auth::{default_policies, Authority};
use fleetsim::hub::state::StateDir;
use fleetsim::hub::throttle::{Limits, Model, Tier};
use fleetsim::sas::generate_token;
use fleetsim::scenario;
use fleetsim::scenario::identities::{self, KeyFormat};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const V: &str = "api-version=2021-04-12";

struct TestHub {
    http: String,
    https: String,
    ca: Vec<u8>,
    auth: Arc<Authority>,
    token: String,
    client: reqwest::Client,
    clock: Clock,
    shutdown: CancellationToken,
    dir: std::path::PathBuf,
}

impl Drop for TestHub {
    fn drop(&mut self) {
        self.shutdown.cancel();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn start(limits: Limits) -> TestHub {
    let dir = std::env::temp_dir().join(format!(
        "fleetsim-rest-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    let state = StateDir::open(&dir).unwrap();
    let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    let auth = Arc::new(state.authority(names.clone()).unwrap());
    let clock = Clock::start();
    let material = state.tls(None, &names, clock.wall_at(0)).unwrap();
    let text = std::fs::read_to_string("tests/fixtures/sdk-hub.toml").unwrap();
    let scenario = scenario::parse(&text, "sdk-hub.toml").unwrap();
    let running = wiring::start(
        &scenario,
        1,
        fleetsim::shard::Shard::ALL,
        clock.clone(),
        limits,
        &MqttOptions::default(),
        None,
    )
    .await
    .unwrap();
    let api = Api::new(
        running.hub.clone(),
        auth.clone(),
        state,
        clock.clone(),
        running.limiter.clone(),
        running.view.clone(),
    );
    let app = api::router(api);
    let shutdown = CancellationToken::new();
    let plain = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tls = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (http, https) = (plain.local_addr().unwrap(), tls.local_addr().unwrap());
    tokio::spawn(api::serve(plain, None, app.clone(), shutdown.clone()));
    let acceptor = fleetsim::tls::acceptor(&material).unwrap();
    tokio::spawn(api::serve(tls, Some(acceptor), app, shutdown.clone()));
    let stop = shutdown.clone();
    tokio::spawn(async move {
        stop.cancelled().await;
        let _ = running.stop().await;
    });
    let ca = std::fs::read(material.ca_path.unwrap()).unwrap();
    let owner = auth.policy("iothubowner").unwrap().primary_key.clone();
    let token = generate_token("localhost", &owner, Some("iothubowner"), expiry(&clock)).unwrap();
    // Let the fleet connect.
    tokio::time::sleep(Duration::from_millis(200)).await;
    TestHub {
        http: format!("http://{http}"),
        https: format!("https://localhost:{}", https.port()),
        ca,
        auth,
        token,
        client: reqwest::Client::new(),
        clock,
        shutdown,
        dir,
    }
}

fn expiry(clock: &Clock) -> u64 {
    clock.wall_at(0).unix_timestamp() as u64 + 3600
}

struct Answer {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts an IoT Hub error: status, header, and the body's two fields.
    fn expect_error(&self, status: u16, name: &str, text: &str) {
        assert_eq!(self.status.as_u16(), status, "{:?}", self.body);
        assert_eq!(
            self.header("iothub-errorcode"),
            Some(name),
            "{:?}",
            self.body
        );
        let message = self.body["Message"].as_str().unwrap_or_default();
        assert!(
            message.starts_with(&format!("ErrorCode:{name};")) && message.contains(text),
            "{message} lacks {text}"
        );
        let exception = self.body["ExceptionMessage"].as_str().unwrap_or_default();
        assert!(
            exception.starts_with("Tracking ID:") && exception.contains("-TimeStamp:"),
            "{exception}"
        );
    }
}

impl TestHub {
    async fn call_with(
        &self,
        method: Method,
        path_and_query: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Answer {
        let mut req = self
            .client
            .request(method, format!("{}{path_and_query}", self.http));
        if let Some(t) = token {
            req = req.header("Authorization", t);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req
                .header("Content-Type", "application/json; charset=utf-8")
                .body(b);
        }
        let r = req.send().await.unwrap();
        let status = r.status();
        let headers = r.headers().clone();
        let bytes = r.bytes().await.unwrap();
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
        Answer {
            status,
            headers,
            body,
        }
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Answer {
        let sep = if path.contains('?') { '&' } else { '?' };
        self.call_with(
            method,
            &format!("{path}{sep}{V}"),
            Some(&self.token),
            &[],
            body.map(|b| b.to_string().into_bytes()),
        )
        .await
    }

    async fn wait_job(&self, id: &str, wanted: &str) -> Value {
        for _ in 0..100 {
            let a = self
                .call(Method::GET, &format!("/jobs/v2/{id}"), None)
                .await;
            if a.body["status"] == wanted {
                return a.body;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("job {id} never became {wanted}");
    }
}

fn method_job(id: &str, query: &str) -> Value {
    json!({
        "jobId": id, "type": "scheduleDeviceMethod", "queryCondition": query,
        "cloudToDeviceMethod": {"methodName": "reboot", "payload": {"delay": 0}, "responseTimeoutInSeconds": 10},
        "maxExecutionTimeInSeconds": 60
    })
}

fn future_twin_job(id: &str) -> Value {
    json!({
        "jobId": id, "type": "scheduleUpdateTwin", "queryCondition": "*",
        "startTime": "2999-01-01T00:00:00Z",
        "updateTwin": {"etag": "*", "tags": {"wave": "2"}}
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_create_get_cancel_and_conflicts() {
    let hub = start(Limits::UNLIMITED).await;
    let a = hub
        .call(
            Method::PUT,
            "/jobs/v2/m1",
            Some(method_job("m1", "deviceId IN ['sdk-01', 'sdk-02']")),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    assert_eq!(
        (a.body["status"].as_str(), a.body["type"].as_str()),
        (Some("queued"), Some("scheduleDeviceMethod"))
    );
    let done = hub.wait_job("m1", "completed").await;
    assert_eq!(done["deviceJobStatistics"]["succeededCount"], 2);
    assert!(done["endTime"].is_string());

    hub.call(Method::PUT, "/jobs/v2/m1", Some(method_job("m1", "*")))
        .await
        .expect_error(409, "JobAlreadyExists", "'m1' already exists");

    let a = hub
        .call(
            Method::PUT,
            "/jobs/v2/later",
            Some(future_twin_job("later")),
        )
        .await;
    assert_eq!(a.body["status"], "queued");
    let a = hub.call(Method::POST, "/jobs/v2/later/cancel", None).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(hub.wait_job("later", "cancelled").await["jobId"], "later");

    hub.call(Method::GET, "/jobs/v2/none", None)
        .await
        .expect_error(404, "JobNotFound", "'none'");
    hub.call(Method::POST, "/jobs/v2/none/cancel", None)
        .await
        .expect_error(404, "JobNotFound", "'none'");

    // Per-device records through the device query.
    let a = hub
        .call(
            Method::POST,
            "/devices/query",
            Some(json!({"query": "SELECT * FROM devices.jobs WHERE devices.jobs.jobId = 'm1'"})),
        )
        .await;
    assert_eq!(a.header("x-ms-item-type"), Some("DeviceJob"));
    let rows = a.body.as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["outcome"]["deviceMethodResponse"]["status"], 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_query_pages_and_filters() {
    let hub = start(Limits::UNLIMITED).await;
    for i in 0..5 {
        let id = format!("t{i}");
        hub.call(
            Method::PUT,
            &format!("/jobs/v2/{id}"),
            Some(future_twin_job(&id)),
        )
        .await;
    }
    hub.call(
        Method::PUT,
        "/jobs/v2/m",
        Some(method_job("m", "deviceId = 'sdk-03'")),
    )
    .await;
    // Header paging.
    let mut ids = Vec::new();
    let mut token: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut headers = vec![("x-ms-max-item-count", "2")];
        if let Some(t) = &token {
            headers.push(("x-ms-continuation", t.as_str()));
        }
        let a = hub
            .call_with(
                Method::GET,
                &format!("/jobs/v2/query?{V}&jobType=ScheduleUpdateTwin"),
                Some(&hub.token),
                &headers,
                None,
            )
            .await;
        assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
        assert_eq!(a.header("x-ms-item-type"), Some("JobResponse"));
        pages += 1;
        ids.extend(
            a.body
                .as_array()
                .unwrap()
                .iter()
                .map(|j| j["jobId"].as_str().unwrap().to_owned()),
        );
        match a.header("x-ms-continuation") {
            Some(t) => {
                assert!(!t.is_empty(), "never an empty continuation");
                token = Some(t.to_owned());
            }
            None => break,
        }
    }
    assert_eq!(
        (ids, pages),
        (
            vec!["t0", "t1", "t2", "t3", "t4"]
                .into_iter()
                .map(String::from)
                .collect::<Vec<_>>(),
            3
        )
    );
    // Query-parameter paging.
    let a = hub
        .call(Method::GET, "/jobs/v2/query?pageSize=4", None)
        .await;
    assert_eq!(a.body.as_array().unwrap().len(), 4);
    let t = a.header("x-ms-continuation").unwrap().to_owned();
    let a = hub
        .call(
            Method::GET,
            &format!("/jobs/v2/query?pageSize=4&continuationToken={t}"),
            None,
        )
        .await;
    assert_eq!(a.body.as_array().unwrap().len(), 2);
    assert!(a.header("x-ms-continuation").is_none());
    // Status filter, case-insensitive.
    hub.wait_job("m", "completed").await;
    let a = hub
        .call(
            Method::GET,
            "/jobs/v2/query?jobType=scheduledevicemethod&jobStatus=COMPLETED",
            None,
        )
        .await;
    assert_eq!(a.body.as_array().unwrap().len(), 1);
    hub.call(Method::GET, "/jobs/v2/query?jobType=reboot", None)
        .await
        .expect_error(400, "ArgumentInvalid", "jobType 'reboot'");
    hub.call(Method::GET, "/jobs/v2/query?jobStatus=done", None)
        .await
        .expect_error(400, "ArgumentInvalid", "jobStatus 'done'");
    hub.call(Method::GET, "/jobs/v2/query?pageSize=0", None)
        .await
        .expect_error(400, "ArgumentInvalid", "page size '0'");
    hub.call(Method::GET, "/jobs/v2/query?continuationToken=zz", None)
        .await
        .expect_error(400, "ArgumentInvalid", "continuation token 'zz'");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_answer_iot_hub_errors() {
    let hub = start(Limits::UNLIMITED).await;
    let raw = |body: &str| Some(body.as_bytes().to_vec());
    let path = format!("/jobs/v2/j?{V}");
    hub.call_with(
        Method::PUT,
        &path,
        Some(&hub.token),
        &[],
        raw("{\"jobId\":"),
    )
    .await
    .expect_error(400, "ArgumentInvalid", "not valid JSON");
    hub.call_with(Method::PUT, &path, Some(&hub.token), &[], None)
        .await
        .expect_error(400, "ArgumentInvalid", "body is empty");
    let mut wrong = method_job("j", "*");
    wrong["maxExecutionTimeInSeconds"] = json!("soon");
    hub.call(Method::PUT, "/jobs/v2/j", Some(wrong))
        .await
        .expect_error(400, "ArgumentInvalid", "maxExecutionTimeInSeconds");
    let bad_prop = json!({"jobId": "j", "type": "scheduleUpdateTwin", "queryCondition": "*",
        "updateTwin": {"etag": "*", "tags": {"a b": "1"}}});
    hub.call(Method::PUT, "/jobs/v2/j", Some(bad_prop))
        .await
        .expect_error(400, "ArgumentInvalid", "property name in updateTwin.tags");
    let bad_value = json!({"jobId": "j", "type": "scheduleUpdateTwin", "queryCondition": "*",
        "updateTwin": {"etag": "*", "properties": {"desired": {"fw": "1;2"}}}});
    hub.call(Method::PUT, "/jobs/v2/j", Some(bad_value))
        .await
        .expect_error(
            400,
            "ArgumentInvalid",
            "value of updateTwin.properties.desired.fw",
        );
    hub.call(Method::PUT, "/jobs/v2/j", Some(method_job("other", "*")))
        .await
        .expect_error(400, "ArgumentInvalid", "differs from the one in the path");
    // api-version.
    hub.call_with(Method::GET, "/jobs/v2/j", Some(&hub.token), &[], None)
        .await
        .expect_error(400, "InvalidProtocolVersion", "missing");
    hub.call_with(
        Method::GET,
        "/jobs/v2/j?api-version=1999-01-01",
        Some(&hub.token),
        &[],
        None,
    )
    .await
    .expect_error(400, "InvalidProtocolVersion", "'1999-01-01'");
    // Payload limits.
    let big = "x".repeat(130 * 1024);
    let mut job = method_job("big", "*");
    job["cloudToDeviceMethod"]["payload"] = json!({ "blob": big });
    hub.call(Method::PUT, "/jobs/v2/big", Some(job))
        .await
        .expect_error(413, "MessageTooLarge", "the limit is 131072 bytes");
    let huge = vec![b' '; api::BODY_LIMIT + 10];
    hub.call_with(
        Method::PATCH,
        &format!("/twins/sdk-01?{V}"),
        Some(&hub.token),
        &[],
        Some(huge),
    )
    .await
    .expect_error(413, "MessageTooLarge", "");
    // Unknown paths and methods still answer IoT Hub errors.
    hub.call(Method::GET, "/nowhere", None)
        .await
        .expect_error(404, "IotHubNotFound", "/nowhere");
    hub.call(Method::DELETE, "/jobs/v2/j", None)
        .await
        .expect_error(405, "MethodNotAllowed", "");
    hub.call(Method::GET, "/twins/%FF%FE", None)
        .await
        .expect_error(400, "ArgumentInvalid", "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_checked() {
    let hub = start(Limits::UNLIMITED).await;
    let path = format!("/twins/sdk-01?{V}");
    hub.call_with(Method::GET, &path, None, &[], None)
        .await
        .expect_error(401, "IotHubUnauthorizedAccess", "no SharedAccessSignature");
    let forged = generate_token(
        "localhost",
        "AAAAAAAAAAAAAAAAAAAAAA==",
        Some("iothubowner"),
        expiry(&hub.clock),
    )
    .unwrap();
    hub.call_with(Method::GET, &path, Some(&forged), &[], None)
        .await
        .expect_error(401, "IotHubUnauthorizedAccess", "signature does not match");
    let owner = hub.auth.policy("iothubowner").unwrap().primary_key.clone();
    let expired = generate_token("localhost", &owner, Some("iothubowner"), 1_000).unwrap();
    hub.call_with(Method::GET, &path, Some(&expired), &[], None)
        .await
        .expect_error(401, "IotHubUnauthorizedAccess", "expired");
    hub.call_with(Method::GET, &path, Some("Bearer abc"), &[], None)
        .await
        .expect_error(401, "IotHubUnauthorizedAccess", "malformed");
    // Fields in any order, sr with a port, the secondary key.
    let secondary = hub
        .auth
        .policy("iothubowner")
        .unwrap()
        .secondary_key
        .clone();
    let t = generate_token(
        "localhost:443",
        &secondary,
        Some("iothubowner"),
        expiry(&hub.clock),
    )
    .unwrap();
    let (head, fields) = t.split_once(' ').unwrap();
    let mut parts: Vec<&str> = fields.split('&').collect();
    parts.reverse();
    let reordered = format!("{head} {}", parts.join("&"));
    assert_eq!(
        hub.call_with(Method::GET, &path, Some(&reordered), &[], None)
            .await
            .status,
        StatusCode::OK
    );
    // Policies without the permission.
    let rr = hub.auth.policy("registryRead").unwrap().primary_key.clone();
    let read_only =
        generate_token("localhost", &rr, Some("registryRead"), expiry(&hub.clock)).unwrap();
    assert_eq!(
        hub.call_with(Method::GET, &path, Some(&read_only), &[], None)
            .await
            .status,
        StatusCode::OK
    );
    hub.call_with(
        Method::PUT,
        &format!("/jobs/v2/x?{V}"),
        Some(&read_only),
        &[],
        Some(method_job("x", "*").to_string().into_bytes()),
    )
    .await
    .expect_error(
        401,
        "IotHubUnauthorizedAccess",
        "lacks the ServiceConnect permission",
    );
    let svc = hub.auth.policy("service").unwrap().primary_key.clone();
    let service = generate_token("localhost", &svc, Some("service"), expiry(&hub.clock)).unwrap();
    hub.call_with(
        Method::GET,
        &format!("/devices/sdk-01?{V}"),
        Some(&service),
        &[],
        None,
    )
    .await
    .expect_error(
        401,
        "IotHubUnauthorizedAccess",
        "lacks the RegistryRead permission",
    );
    hub.call_with(
        Method::DELETE,
        &format!("/devices/sdk-01?{V}"),
        Some(&read_only),
        &[],
        None,
    )
    .await
    .expect_error(
        401,
        "IotHubUnauthorizedAccess",
        "lacks the RegistryWrite permission",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tier_model_throttles() {
    let hub = start(Limits {
        tier: Tier::S1,
        units: 1,
        throttle: Model::Reject,
    })
    .await;
    let a = hub
        .call(Method::PUT, "/jobs/v2/a", Some(future_twin_job("a")))
        .await;
    assert_eq!(a.status, StatusCode::OK);
    hub.call(Method::PUT, "/jobs/v2/b", Some(future_twin_job("b")))
        .await
        .expect_error(
            429,
            "ThrottlingMaxActiveJobCountExceeded",
            "allows 1 active job",
        );
    // 100 job operations per minute on S1: two are spent.
    let mut last = None;
    for _ in 0..100 {
        let a = hub.call(Method::GET, "/jobs/v2/a", None).await;
        if a.status != StatusCode::OK {
            last = Some(a);
            break;
        }
    }
    last.expect("the 101st job operation is throttled")
        .expect_error(429, "ThrottlingException", "100 per minute");
    // Queries have their own allowance: 20 per minute per unit on S1.
    let query = || json!({"query": "SELECT * FROM devices WHERE tags.building = '43'"});
    for k in 0..20 {
        let a = hub
            .call(Method::POST, "/devices/query", Some(query()))
            .await;
        assert_eq!(a.status, StatusCode::OK, "query {k}: {:?}", a.body);
    }
    hub.call(Method::POST, "/devices/query", Some(query()))
        .await
        .expect_error(
            429,
            "ThrottlingException",
            "queries are limited to 20 per minute",
        );
    // Twin reads are not spent by the queries: 100 per second.
    let a = hub.call(Method::GET, "/twins/sdk-05", None).await;
    assert_eq!(a.status, StatusCode::OK);
}

/// Traffic shaping (the default model) as
/// https://learn.microsoft.com/azure/iot-hub/iot-hub-devguide-quotas-throttling#traffic-shaping
/// describes it: a burst is served at once, then calls queue and are served at the throttle's
/// rate, and only past a full backlog are they refused, with 429002 ThrottleBacklogLimitExceeded
/// ("the number of requests that are in the backlog due to throttling has exceeded the backlog
/// limit", https://learn.microsoft.com/azure/iot-hub/troubleshoot-error-codes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shaping_serves_the_burst_queues_the_rest_and_refuses_a_full_backlog() {
    let hub = Arc::new(
        start(Limits {
            tier: Tier::S1,
            units: 1,
            throttle: Model::Shape,
        })
        .await,
    );
    // S1 allows 100 twin reads per second; its backlog holds another 100. 250 at once: 100
    // served now, 100 queued (within about a second), 50 refused.
    let started = std::time::Instant::now();
    let calls: Vec<_> = (0..250)
        .map(|_| {
            let hub = hub.clone();
            tokio::spawn(async move {
                let a = hub.call(Method::GET, "/twins/sdk-05", None).await;
                (a, started.elapsed())
            })
        })
        .collect();
    let mut ok = Vec::new();
    let mut refused = 0;
    for call in calls {
        let (a, at) = call.await.unwrap();
        if a.status == StatusCode::OK {
            ok.push(at);
        } else {
            a.expect_error(429, "ThrottleBacklogLimitExceeded", "backlog already holds");
            refused += 1;
        }
    }
    ok.sort();
    // The bucket refills while the calls arrive: a little more than 200 may be served, and
    // none is refused only if the 250 took over half a second to arrive.
    assert!(
        ok.len() >= 200 && refused >= 1,
        "burst and backlog served ({} of 250), the rest refused ({refused})",
        ok.len()
    );
    assert!(
        ok[ok.len() - 1] >= Duration::from_millis(900),
        "the backlog is served at 100/s, not at once: the last answer came at {:?}",
        ok[ok.len() - 1]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twins_read_patch_replace_with_etags() {
    let hub = start(Limits::UNLIMITED).await;
    let twin = hub.call(Method::GET, "/twins/sdk-05", None).await.body;
    assert_eq!(twin["tags"]["building"], "43");
    let etag = format!("\"{}\"", twin["etag"].as_str().unwrap());
    let patch = json!({"tags": {"ring": "a"}, "properties": {"desired": {"fw": "2"}}});
    let a = hub
        .call_with(
            Method::PATCH,
            &format!("/twins/sdk-05?{V}"),
            Some(&hub.token),
            &[("If-Match", &etag)],
            Some(patch.to_string().into_bytes()),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    assert_eq!(
        (
            a.body["tags"]["ring"].as_str(),
            a.body["tags"]["building"].as_str()
        ),
        (Some("a"), Some("43"))
    );
    hub.call_with(
        Method::PATCH,
        &format!("/twins/sdk-05?{V}"),
        Some(&hub.token),
        &[("If-Match", &etag)],
        Some(patch.to_string().into_bytes()),
    )
    .await
    .expect_error(412, "PreconditionFailed", "does not match");
    let a = hub
        .call_with(
            Method::PUT,
            &format!("/twins/sdk-05?{V}"),
            Some(&hub.token),
            &[("If-Match", "*")],
            Some(json!({"tags": {"only": "this"}}).to_string().into_bytes()),
        )
        .await;
    assert_eq!(a.body["tags"], json!({"only": "this"}));
    assert!(a.body["properties"]["desired"].get("fw").is_none());
    hub.call(
        Method::PATCH,
        "/twins/sdk-05",
        Some(json!({"tags": {"a.b": 1}})),
    )
    .await
    .expect_error(400, "ArgumentInvalid", "a.b");
    hub.call(Method::PATCH, "/twins/sdk-05", Some(json!({"tags": "x"})))
        .await
        .expect_error(400, "ArgumentInvalid", "expected an object");
    hub.call(Method::GET, "/twins/ghost", None)
        .await
        .expect_error(404, "DeviceNotFound", "ghost");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_methods() {
    let hub = start(Limits::UNLIMITED).await;
    let call =
        json!({"methodName": "reboot", "payload": {"now": true}, "responseTimeoutInSeconds": 5});
    let a = hub
        .call(Method::POST, "/twins/sdk-06/methods", Some(call.clone()))
        .await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    assert_eq!(a.body["status"], 200);
    hub.call(Method::POST, "/twins/ghost/methods", Some(call.clone()))
        .await
        .expect_error(404, "DeviceNotFound", "ghost");
    hub.call(
        Method::PUT,
        "/devices/offline-1",
        Some(json!({"deviceId": "offline-1"})),
    )
    .await;
    hub.call(Method::POST, "/twins/offline-1/methods", Some(call))
        .await
        .expect_error(404, "DeviceNotOnline", "offline-1");
    hub.call(
        Method::POST,
        "/twins/sdk-06/methods",
        Some(json!({"methodName": "m", "responseTimeoutInSeconds": 1000})),
    )
    .await
    .expect_error(400, "ArgumentInvalid", "responseTimeoutInSeconds");
    hub.call(Method::POST, "/twins/sdk-06/methods", Some(json!(["m"])))
        .await
        .expect_error(400, "ArgumentInvalid", "JSON object");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_registry_and_bulk() {
    let hub = start(Limits::UNLIMITED).await;
    let a = hub
        .call(
            Method::PUT,
            "/devices/new-1",
            Some(json!({"deviceId": "new-1"})),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    let derived = hub.auth.derived_keys("new-1");
    assert_eq!(
        a.body["authentication"]["symmetricKey"]["primaryKey"],
        derived.primary_key.as_str()
    );
    assert_eq!(a.body["connectionState"], "Disconnected");
    hub.call(
        Method::PUT,
        "/devices/new-1",
        Some(json!({"deviceId": "new-1"})),
    )
    .await
    .expect_error(409, "DeviceAlreadyExists", "new-1");
    let own = json!({"deviceId": "new-1", "authentication": {"type": "sas", "symmetricKey": {"primaryKey": "AAAA", "secondaryKey": "BBBB"}}});
    let a = hub
        .call_with(
            Method::PUT,
            &format!("/devices/new-1?{V}"),
            Some(&hub.token),
            &[("If-Match", "\"*\"")],
            Some(own.to_string().into_bytes()),
        )
        .await;
    assert_eq!(
        a.body["authentication"]["symmetricKey"]["primaryKey"],
        "AAAA"
    );
    let got = hub.call(Method::GET, "/devices/new-1", None).await;
    assert_eq!(
        got.body["authentication"]["symmetricKey"]["secondaryKey"],
        "BBBB"
    );
    hub.call(Method::PUT, "/devices/a%2Fb", Some(json!({})))
        .await
        .expect_error(400, "ArgumentInvalid", "invalid deviceId");
    hub.call(
        Method::PUT,
        "/devices/new-2",
        Some(json!({"status": "disabled"})),
    )
    .await
    .expect_error(400, "ArgumentInvalid", "status");
    let list = hub.call(Method::GET, "/devices?top=5", None).await;
    assert_eq!(list.body.as_array().unwrap().len(), 5);
    let a = hub.call(Method::DELETE, "/devices/new-1", None).await;
    assert_eq!(a.status, StatusCode::NO_CONTENT);
    assert_eq!(
        hub.auth.device_keys("new-1"),
        hub.auth.derived_keys("new-1")
    );
    hub.call(Method::GET, "/devices/new-1", None)
        .await
        .expect_error(404, "DeviceNotFound", "new-1");
    hub.call(Method::DELETE, "/devices/new-1", None)
        .await
        .expect_error(404, "DeviceNotFound", "new-1");

    // Bulk: a thousand devices in one call, then a partial failure.
    let many: Vec<Value> = (0..1000)
        .map(|i| json!({"id": format!("bulk-{i:04}"), "importMode": "create"}))
        .collect();
    let a = hub
        .call(Method::POST, "/devices", Some(Value::Array(many)))
        .await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    assert_eq!(a.body["isSuccessful"], true);
    let count = hub
        .call(
            Method::POST,
            "/devices/query",
            Some(json!({"query": "SELECT * FROM devices"})),
        )
        .await;
    assert_eq!(
        count.body.as_array().unwrap().len(),
        100,
        "default page size"
    );
    let mixed = json!([
        {"id": "bulk-0000", "importMode": "create"},
        {"id": "bulk-0001", "importMode": "delete"},
        {"id": "bulk-x", "importMode": "frobnicate"}
    ]);
    let a = hub.call(Method::POST, "/devices", Some(mixed)).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(a.body["isSuccessful"], false);
    let errors = a.body["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 2);
    assert_eq!(errors[0]["errorCode"], "DeviceAlreadyExists");
    hub.call(Method::GET, "/devices/bulk-0001", None)
        .await
        .expect_error(404, "DeviceNotFound", "bulk-0001");
    hub.call(Method::POST, "/devices", Some(json!({"id": "x"})))
        .await
        .expect_error(400, "ArgumentInvalid", "JSON array");

    // The bulk-import lines of `fleetsim keys --format import` (keys from another hub's
    // secret) register their devices with those keys.
    let text = "name = \"k\"\nduration = \"1m\"\n[[cohort]]\nname = \"c\"\ncount = 3\nid_prefix = \"imp-\"\ntags = { a = \"1\" }\n";
    let other = Authority::new(
        vec![],
        default_policies(),
        b"other".to_vec(),
        Default::default(),
    );
    let mut lines = Vec::new();
    identities::export(
        &scenario::parse(text, "k.toml").unwrap(),
        &other,
        KeyFormat::Import,
        &mut lines,
    )
    .unwrap();
    let devices: Vec<Value> = String::from_utf8(lines)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let a = hub
        .call(Method::POST, "/devices", Some(Value::Array(devices)))
        .await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    let got = hub.call(Method::GET, "/devices/imp-2", None).await;
    assert_eq!(
        got.body["authentication"]["symmetricKey"]["primaryKey"],
        other.device_keys("imp-2").primary_key.as_str()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_query_pages_twins_and_raw_rows() {
    let hub = start(Limits::UNLIMITED).await;
    let q = json!({"query": "SELECT * FROM devices WHERE tags.building = '43'"});
    let mut seen = 0;
    let mut token: Option<String> = None;
    for page in 0.. {
        assert!(page < 10);
        let mut headers = vec![("x-ms-max-item-count", "7")];
        if let Some(t) = &token {
            headers.push(("x-ms-continuation", t.as_str()));
        }
        let a = hub
            .call_with(
                Method::POST,
                &format!("/devices/query?{V}"),
                Some(&hub.token),
                &headers,
                Some(q.to_string().into_bytes()),
            )
            .await;
        assert_eq!(a.header("x-ms-item-type"), Some("Twin"));
        seen += a.body.as_array().unwrap().len();
        match a.header("x-ms-continuation") {
            Some(t) => token = Some(t.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, 20);
    // A continuation the client made up, with an offset at the end of the address space (the
    // offset plus the page size overflowed, issue 16): refused, not a dropped connection.
    let q = json!({"query": "SELECT * FROM devices"});
    let a = hub
        .call_with(
            Method::POST,
            &format!("/devices/query?{V}"),
            Some(&hub.token),
            &[("x-ms-max-item-count", "7")],
            Some(q.to_string().into_bytes()),
        )
        .await;
    let token = a.header("x-ms-continuation").unwrap();
    let forged = format!("{}.ffffffffffffffff", token.split_once('.').unwrap().0);
    hub.call_with(
        Method::POST,
        &format!("/devices/query?{V}"),
        Some(&hub.token),
        &[("x-ms-max-item-count", "7"), ("x-ms-continuation", &forged)],
        Some(q.to_string().into_bytes()),
    )
    .await
    .expect_error(
        400,
        "ArgumentInvalid",
        &format!("continuation token '{forged}'"),
    );
    let a = hub
        .call(
            Method::POST,
            "/devices/query",
            Some(json!({"query": "SELECT deviceId FROM devices"})),
        )
        .await;
    assert_eq!(a.header("x-ms-item-type"), Some("Raw"));
    hub.call(Method::POST, "/devices/query", Some(json!({"sql": "x"})))
        .await
        .expect_error(400, "ArgumentInvalid", "has no query");
    hub.call(Method::POST, "/devices/query", Some(json!({"query": 5})))
        .await
        .expect_error(400, "ArgumentInvalid", "query is 5");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_speaks_tls_12_and_13_and_metrics_are_exposed() {
    let hub = start(Limits::UNLIMITED).await;
    let ca = reqwest::Certificate::from_pem(&hub.ca).unwrap();
    for version in [
        reqwest::tls::Version::TLS_1_2,
        reqwest::tls::Version::TLS_1_3,
    ] {
        let client = reqwest::Client::builder()
            .use_rustls_tls()
            .add_root_certificate(ca.clone())
            .min_tls_version(version)
            .max_tls_version(version)
            .build()
            .unwrap();
        let r = client
            .get(format!("{}/twins/sdk-01?{V}", hub.https))
            .header("Authorization", &hub.token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let twin: Value = r.json().await.unwrap();
        assert_eq!(twin["deviceId"], "sdk-01");
    }
    // A client that does not trust our CA refuses the hub.
    let untrusting = reqwest::Client::builder().use_rustls_tls().build().unwrap();
    assert!(untrusting
        .get(format!("{}/metrics", hub.https))
        .send()
        .await
        .is_err());

    hub.call(
        Method::PUT,
        "/jobs/v2/later",
        Some(future_twin_job("later")),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(250)).await;
    let text = reqwest::get(format!("{}/metrics", hub.http))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "fleetsim_devices 20",
        "fleetsim_devices_connected 20",
        "fleetsim_jobs{status=\"scheduled\",type=\"scheduleUpdateTwin\"} 1",
        "fleetsim_job_device_operations{outcome=\"succeeded\"} 0",
        "fleetsim_api_request_duration_seconds_count{route=\"PUT /jobs/v2/{id}\",code=\"2xx\"} 1",
    ] {
        assert!(text.contains(line), "missing {line} in\n{text}");
    }
}

/// Issue 16: a startTime past what IoT Hub can represent (year 10000 once in UTC) made the engine
/// panic in its date arithmetic, and every later call answered 403 "the hub is shutting down".
/// Such a time is refused with 400, and the hub keeps answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_time_out_of_range_is_refused_and_the_hub_lives_on() {
    let hub = start(Limits::UNLIMITED).await;
    for (start, side) in [
        ("9999-12-31T23:59:59-01:00", "after"),
        ("0000-01-01T00:00:00Z", "before"),
        ("0001-01-01T00:00:00+01:00", "before"),
    ] {
        let mut job = future_twin_job("far");
        job["startTime"] = json!(start);
        hub.call(Method::PUT, "/jobs/v2/far", Some(job))
            .await
            .expect_error(
                400,
                "ArgumentInvalid",
                &format!(
                    "startTime '{start}' is {side} the range 0001-01-01T00:00:00Z to \
                     9999-12-31T23:59:59.9999999Z in UTC; expected a time in that range"
                ),
            );
    }
    // The last representable instant is accepted, printed back as it was given, and cancellable.
    let mut job = future_twin_job("last");
    job["startTime"] = json!("9999-12-31T23:59:59.9999999Z");
    let a = hub.call(Method::PUT, "/jobs/v2/last", Some(job)).await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    assert_eq!(a.body["startTime"], "9999-12-31T23:59:59.999Z");
    let a = hub.call(Method::POST, "/jobs/v2/last/cancel", None).await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    assert_eq!(a.body["status"], "cancelled");
    // The engine is alive: a job still runs to the end.
    let a = hub
        .call(
            Method::PUT,
            "/jobs/v2/m",
            Some(method_job("m", "deviceId = 'sdk-01'")),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    hub.wait_job("m", "completed").await;
}
