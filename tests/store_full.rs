//! A hub whose store cannot commit stops: `fleetsim hub` runs under a file size limit
//! (`ulimit -f`, with SIGXFSZ ignored, so a write past it fails with EFBIG instead of killing
//! the process) while a client patches twins over REST until the store's log reaches the limit.
//! The test checks that the hub exits with code 5 and says which store failed and why, that
//! nothing was answered 2xx after the failure, and that a hub started again without the limit
//! holds every answered write with its version, and not the write whose commit failed.
//!
//! What SQLite makes of EFBIG: it reports SQLITE_IOERR_WRITE ("disk I/O error"), not
//! SQLITE_FULL (that one only for ENOSPC); the hub adds the system's error to the message.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

mod common;

use common::{free_port, Killed};

const API: &str = "api-version=2021-04-12";
const DEVICES: usize = 20;
/// The file size limit, in `ulimit -f` blocks of 512 bytes: 1 MiB, a few hundred twin patches
/// of the store's log.
const LIMIT_BLOCKS: u32 = 2048;

/// Starts `fleetsim hub` on `dir` with plain HTTP on `port`, under `ulimit -f limit` if given;
/// answers once it listens.
fn start_hub(dir: &Path, port: u16, limit: Option<u32>) -> Killed {
    let hub = format!("exec \"$0\" hub --state-dir \"$1\" --http 127.0.0.1:{port} --https off");
    let script = match limit {
        // `sh`'s `ulimit -f` counts 512-byte blocks (POSIX: dash, and bash run as sh); an
        // ignored signal stays ignored across exec.
        Some(blocks) => format!("trap '' XFSZ; ulimit -f {blocks}; {hub}"),
        None => hub,
    };
    let mut child = Command::new("sh")
        .args(["-c", &script])
        .arg(env!("CARGO_BIN_EXE_fleetsim"))
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sh runs");
    common::announced_connection_string(child.stdout.take().unwrap());
    Killed(child)
}

/// A service SAS token for the hub of state directory `dir`.
fn token(dir: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_fleetsim"))
        .args(["connection-string", "--sas-token", "3600", "--state-dir"])
        .arg(dir)
        .output()
        .expect("fleetsim runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// The REST API of the hub on `port`, signed with `token`: the status, and the body of a 2xx;
/// None when the hub does not answer.
async fn call(
    client: &reqwest::Client,
    token: &str,
    port: u16,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> Option<(u16, Value)> {
    let mut req = client
        .request(method, format!("http://127.0.0.1:{port}{path}?{API}"))
        .header("Authorization", token)
        .timeout(Duration::from_secs(5));
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await.ok()?;
    let status = resp.status().as_u16();
    Some((status, resp.json().await.unwrap_or(Value::Null)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_whose_store_cannot_commit_stops_and_keeps_every_answered_write() {
    let started = Instant::now();
    let dir = common::workdir("store-full", "hub");
    let port = free_port();
    let mut hub = start_hub(&dir, port, Some(LIMIT_BLOCKS));
    let mut stderr = hub.0.stderr.take().unwrap();
    let stderr = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let token = token(&dir);
    let client = reqwest::Client::new();
    for i in 0..DEVICES {
        let put = call(
            &client,
            &token,
            port,
            reqwest::Method::PUT,
            &format!("/devices/full-{i:02}"),
            Some(json!({ "deviceId": format!("full-{i:02}") })),
        )
        .await;
        assert!(
            put.as_ref().is_some_and(|(s, _)| *s == 200),
            "device {i}: {put:?}"
        );
    }

    // Patches, one at a time, until the hub stops answering: the last answered one per device
    // (n, version), the first refusal, and every answer after it.
    let pad = "x".repeat(300);
    let mut last_acked = vec![None::<(u64, u64)>; DEVICES];
    let mut acked = 0;
    let mut refused: Option<(u16, Value)> = None;
    let mut after = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    for n in 0u64.. {
        assert!(Instant::now() < deadline, "the store never failed");
        let k = n as usize % DEVICES;
        let Some((status, body)) = call(
            &client,
            &token,
            port,
            reqwest::Method::PATCH,
            &format!("/twins/full-{k:02}"),
            Some(json!({ "tags": { "n": n, "pad": pad } })),
        )
        .await
        else {
            break;
        };
        match (&refused, (200..300).contains(&status)) {
            (None, true) => {
                last_acked[k] = Some((n, body["version"].as_u64().unwrap()));
                acked += 1;
            }
            (None, false) => refused = Some((status, body)),
            (Some(_), _) => after.push(status),
        }
    }
    let (status, body) = refused.expect("a patch was refused");
    eprintln!(
        "{acked} patches answered 2xx, then {status} {body}; {} answers after it: {after:?}",
        after.len()
    );
    assert!(acked >= 100, "only {acked} patches before the store failed");
    assert_eq!(status, 500, "{body}");
    assert!(
        body["Message"]
            .as_str()
            .is_some_and(|m| m.contains("could not save this change")),
        "{body}"
    );
    assert!(
        after.iter().all(|s| !(200..300).contains(s)),
        "answered 2xx after the failure: {after:?}"
    );

    let exit = hub.0.wait().unwrap();
    let stderr = stderr.join().unwrap();
    eprintln!("{stderr}");
    assert_eq!(exit.code(), Some(5), "{exit:?}: {stderr}");
    let store = dir.join("hub.db");
    for words in [
        format!("the hub's store {} could not commit", store.display()),
        "File too large".into(),
        "the file is full".into(),
        "it resumes from what was committed".into(),
    ] {
        assert!(stderr.contains(&words), "no '{words}' in: {stderr}");
    }
    drop(hub);

    // Started again without the limit, it holds every answered patch with its version.
    let port = free_port();
    let _hub = start_hub(&dir, port, None);
    for (k, last) in last_acked.iter().enumerate() {
        let (_, twin) = call(
            &client,
            &token,
            port,
            reqwest::Method::GET,
            &format!("/twins/full-{k:02}"),
            None,
        )
        .await
        .unwrap();
        // The last answered patch, so not the refused one (a later patch of its device).
        let (n, version) = last.expect("every device was patched");
        assert_eq!(twin["tags"]["n"], json!(n), "{twin}");
        assert_eq!(twin["version"], json!(version), "{twin}");
    }
    eprintln!("done in {:.1} s", started.elapsed().as_secs_f64());
    drop(_hub);
    let _ = std::fs::remove_dir_all(&dir);
}
