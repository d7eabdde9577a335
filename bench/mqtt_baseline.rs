//! The baseline a user would build by hand for `bench/mqtt.sh`: N plain rumqttc clients (default
//! options), each subscribed to its own request topic on a broker (mosquitto), and one
//! controller client that sends every device a request and waits for every answer, for a number
//! of rounds. Prints round trips per second.
//!
//! `cargo bench --bench mqtt_baseline -- PORT DEVICES ROUNDS`

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let port: u16 = args.first().and_then(|a| a.parse().ok()).unwrap_or(1883);
    let devices: u32 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(15_000);
    let rounds: u32 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(5);

    // Devices: subscribe to their own request topic, answer on their own response topic.
    let subscribed = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    for i in 0..devices {
        let (client, mut eventloop) =
            AsyncClient::new(MqttOptions::new(format!("dev{i}"), "127.0.0.1", port), 10);
        let subscribed = subscribed.clone();
        tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        let _ = client
                            .subscribe(format!("bench/{i}/req"), QoS::AtMostOnce)
                            .await;
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        subscribed.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let _ = client
                            .publish(format!("bench/{i}/res"), QoS::AtMostOnce, false, p.payload)
                            .await;
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        });
        if i % 500 == 499 {
            // Pace the connection burst (mosquitto's listen backlog).
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    while subscribed.load(Ordering::Relaxed) < devices as u64 {
        if start.elapsed() > Duration::from_secs(180) {
            eprintln!(
                "baseline: only {}/{devices} devices subscribed after 180 s",
                subscribed.load(Ordering::Relaxed)
            );
            std::process::exit(1);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "baseline: {devices} rumqttc devices subscribed in {:.1}s",
        start.elapsed().as_secs_f64()
    );

    // The controller.
    let mut opts = MqttOptions::new("controller", "127.0.0.1", port);
    opts.set_request_channel_capacity(devices as usize);
    opts.set_inflight(u16::MAX);
    let (controller, mut eventloop) = AsyncClient::new(opts, devices as usize);
    let (tx, mut answers) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(ev) = eventloop.poll().await {
            if let Event::Incoming(Packet::Publish(_)) = ev {
                let _ = tx.send(());
            }
        }
    });
    controller
        .subscribe("bench/+/res", QoS::AtMostOnce)
        .await
        .expect("controller subscribes");
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut total = 0u64;
    let t0 = Instant::now();
    for r in 0..rounds {
        let round = Instant::now();
        for i in 0..devices {
            controller
                .publish(
                    format!("bench/{i}/req"),
                    QoS::AtMostOnce,
                    false,
                    "{\"r\":1}",
                )
                .await
                .expect("controller publishes");
        }
        let mut got = 0;
        while got < devices {
            match tokio::time::timeout(Duration::from_secs(30), answers.recv()).await {
                Ok(Some(())) => got += 1,
                _ => break,
            }
        }
        total += got as u64;
        eprintln!(
            "baseline: round {} {got}/{devices} answers in {:.2}s",
            r + 1,
            round.elapsed().as_secs_f64()
        );
    }
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "baseline round trips/s: {:.0} ({total} round trips in {secs:.2}s)",
        total as f64 / secs
    );
    std::process::exit(0);
}
