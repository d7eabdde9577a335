//! The official service SDKs against `fleetsim hub`: starts the binary on a temporary state
//! directory with the `sdk-hub` fleet, HTTPS on 127.0.0.1:443 (the Node SDK ignores ports),
//! runs `tests/sdk/node` (azure-iothub, NODE_EXTRA_CA_CERTS; and azure-iot-device with
//! azure-iot-device-mqtt over MQTT/TLS on 127.0.0.1:8883, the device SDKs' fixed port) and
//! `tests/sdk/python` (azure-iot-hub, REQUESTS_CA_BUNDLE; and azure-iot-device over MQTT/TLS),
//! then stops the hub with SIGTERM and expects a clean exit.
//!
//! `scripts/test.sh` installs the SDKs and sets FLEETSIM_SDK_TESTS=1, which makes this test
//! mandatory; a bare `cargo test` without the SDKs installed skips it with a note.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Hub {
    child: Child,
    connection_string: String,
    ca: String,
}

impl Drop for Hub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_hub(state_dir: &Path) -> Hub {
    let mut child = Command::new(env!("CARGO_BIN_EXE_fleetsim"))
        .args([
            "hub",
            "--scenario",
            "tests/fixtures/sdk-hub.toml",
            "--http",
            "off",
        ])
        .args([
            "--https",
            "127.0.0.1:443",
            "--mqtts",
            "127.0.0.1:8883",
            "--state-dir",
        ])
        .arg(state_dir)
        .stdout(Stdio::piped())
        .spawn()
        .expect("fleetsim runs");
    let stdout = child.stdout.take().unwrap();
    let (mut connection_string, mut ca) = (String::new(), String::new());
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        println!("{line}");
        if let Some(c) = line.strip_prefix("fleetsim hub: CA certificate ") {
            ca = c.to_owned();
        }
        if let Some(c) = line.strip_prefix("fleetsim hub: connection string ") {
            connection_string = c.to_owned();
            break;
        }
    }
    assert!(
        !connection_string.is_empty(),
        "fleetsim hub did not start (is port 443 free, and are we root?)"
    );
    Hub {
        child,
        connection_string,
        ca,
    }
}

fn run(cmd: &mut Command, what: &str) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    println!("{}", String::from_utf8_lossy(&out.stdout));
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{what} failed: {}", out.status);
}

#[test]
fn official_sdks_drive_the_hub() {
    let node_ready = ["azure-iothub", "azure-iot-device", "azure-iot-device-mqtt"]
        .iter()
        .all(|p| Path::new("tests/sdk/node/node_modules").join(p).exists());
    let python_ready = Command::new("python3")
        .args(["-c", "import azure.iot.hub, azure.iot.device, six"])
        .output()
        .is_ok_and(|o| o.status.success());
    if std::env::var_os("FLEETSIM_SDK_TESTS").is_none() && !(node_ready && python_ready) {
        println!("skipped: the SDKs are not installed (scripts/test.sh installs them)");
        return;
    }
    assert!(node_ready, "run `npm ci` in tests/sdk/node");
    assert!(
        python_ready,
        "run `pip install azure-iot-hub azure-iot-device six`"
    );

    let state_dir = std::env::temp_dir().join(format!("fleetsim-sdk-{}", std::process::id()));
    let mut hub = start_hub(&state_dir);
    assert!(hub.connection_string.starts_with("HostName=localhost;"));
    run(
        Command::new("node")
            .arg("sdk_test.js")
            .current_dir("tests/sdk/node")
            .env("FLEETSIM_CONNECTION_STRING", &hub.connection_string)
            .env("NODE_EXTRA_CA_CERTS", &hub.ca),
        "the Node SDK test",
    );
    run(
        Command::new("node")
            .arg("device_test.js")
            .current_dir("tests/sdk/node")
            .env("FLEETSIM_CONNECTION_STRING", &hub.connection_string)
            .env("FLEETSIM_CA", &hub.ca)
            .env("NODE_EXTRA_CA_CERTS", &hub.ca),
        "the Node device SDK test (MQTT over TLS)",
    );
    run(
        Command::new("python3")
            .args(["-m", "unittest", "-v", "test_sdk"])
            .current_dir("tests/sdk/python")
            .env("FLEETSIM_CONNECTION_STRING", &hub.connection_string)
            .env("REQUESTS_CA_BUNDLE", &hub.ca),
        "the Python SDK test",
    );
    run(
        Command::new("python3")
            .args(["-m", "unittest", "-v", "test_device"])
            .current_dir("tests/sdk/python")
            .env("FLEETSIM_CONNECTION_STRING", &hub.connection_string)
            .env("FLEETSIM_CA", &hub.ca)
            .env("REQUESTS_CA_BUNDLE", &hub.ca),
        "the Python device SDK test (MQTT over TLS)",
    );

    // SIGTERM stops the hub cleanly.
    let pid = hub.child.id().to_string();
    run(Command::new("kill").args(["-TERM", &pid]), "kill -TERM");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = hub.child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "the hub ignored SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "the hub exited with {status}");
    let _ = std::fs::remove_dir_all(&state_dir);
}
