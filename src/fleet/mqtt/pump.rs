//! The fleet's packet pump: one thread serving every established device connection of this
//! process from one poller. A connection is data here (its [`Stream`] and [`Session`]), not a
//! task: a readable socket is read, parsed and answered in place, and one heap holds every
//! connection's next deadline (answers due after their latency, keep-alive pings, churn).
//!
//! Connections arrive established: [`super::client`] dials, runs TLS, CONNECT and SUBSCRIBE in
//! tokio, then hands the connection over with [`PumpHandle::adopt`] and waits for the device to
//! come back when the session ends ([`Over`]), to reconnect after its downtime or backoff.

use std::io;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::Arc;

use mio::Poll;
use tokio::sync::oneshot;

use crate::clock::Micros;
use crate::fleet::mqtt::client::Device;
use crate::fleet::mqtt::session::{Ended, Outbox, Session};
use crate::fleet::mqtt::Shared;
use crate::mqtt::reactor::{self, Handler, Link, Mailbox, Reactor, Served};
use crate::mqtt::stream::Stream;

/// A device back from the pump: its session has ended.
pub(crate) struct Over {
    /// The device, with its behaviour state as the session left it.
    pub(crate) device: Device,
    /// How the session ended.
    pub(crate) ended: Ended,
}

/// A connection for the pump to serve.
struct Adopted {
    stream: Stream,
    device: Device,
    back: oneshot::Sender<Over>,
}

enum Command {
    Adopt(Box<Adopted>),
    /// Drop the connections that `disconnect` fault `k` hits.
    Fault(usize),
    /// Close every connection (with DISCONNECT), and every one adopted from now on.
    Stop,
    /// End the thread.
    Exit,
}

/// How device tasks reach the pump. A pump that has ended drops what it is sent: an adopted
/// device's receiver then reports the pump gone.
pub(crate) struct PumpHandle(Mailbox<Command>);

impl PumpHandle {
    fn send(&self, command: Command) {
        self.0.post(command);
    }

    /// Serves `device`'s established connection `stream` from now on; the receiver gets the
    /// device back when the session ends (an error: the pump is gone).
    pub(crate) fn adopt(&self, stream: Stream, device: Device) -> oneshot::Receiver<Over> {
        let (back, over) = oneshot::channel();
        self.send(Command::Adopt(Box::new(Adopted {
            stream,
            device,
            back,
        })));
        over
    }

    /// Closes every connection with DISCONNECT, and every connection adopted from now on: the
    /// run is stopping. Each device comes back with [`Ended::Shutdown`].
    pub(crate) fn stop(&self) {
        self.send(Command::Stop);
    }

    /// Drops the connections that `disconnect` fault `k` of the plan hits, now: each device
    /// comes back with [`Ended::Fault`].
    pub(crate) fn fault(&self, k: usize) {
        self.send(Command::Fault(k));
    }

    /// Ends the pump thread (closing what it still serves).
    pub(crate) fn exit(&self) {
        self.send(Command::Exit);
    }
}

/// The pump's end of the commands, until its thread starts.
pub(crate) struct Inbox {
    poll: Poll,
    commands: Receiver<Command>,
}

/// The pump's command channel: the handle for the device tasks and the inbox for
/// [`spawn`].
pub(crate) fn channel() -> io::Result<(PumpHandle, Inbox)> {
    let (mailbox, poll, commands) = reactor::mailbox()?;
    Ok((PumpHandle(mailbox), Inbox { poll, commands }))
}

/// Starts the pump thread on `inbox`, inside the current tokio runtime (its clock; an error
/// outside one); the returned receiver completes when the thread has closed every connection
/// and ended.
pub(crate) fn spawn(inbox: Inbox, shared: Arc<Shared>) -> io::Result<oneshot::Receiver<()>> {
    let mut pump = Pump {
        reactor: Reactor::new(inbox.poll),
        commands: inbox.commands,
        stopping: false,
        outbox: Outbox::new(shared.config.receipts.is_some()),
        shared,
    };
    reactor::spawn("mqtt-fleet-pump", move || pump.run())
}

/// One served connection.
struct Conn {
    link: Link,
    session: Session,
    back: oneshot::Sender<Over>,
}

impl Served for Conn {
    fn link(&mut self) -> &mut Link {
        &mut self.link
    }
}

struct Pump {
    reactor: Reactor<Conn>,
    commands: Receiver<Command>,
    shared: Arc<Shared>,
    /// Told to stop: newcomers are closed at once.
    stopping: bool,
    outbox: Outbox,
}

impl Pump {
    fn run(&mut self) {
        reactor::drive(self);
        self.close_all();
    }
}

impl Handler for Pump {
    type Conn = Conn;

    fn reactor(&mut self) -> &mut Reactor<Conn> {
        &mut self.reactor
    }

    fn now(&self) -> Micros {
        self.shared.clock.now_us()
    }

    fn on_readable(&mut self, slot: usize) {
        self.serve(slot);
    }

    /// Takes every waiting command; false once told to exit.
    fn on_commands(&mut self) -> bool {
        loop {
            match self.commands.try_recv() {
                Ok(Command::Adopt(new)) => self.adopt(*new),
                Ok(Command::Fault(k)) => {
                    for slot in 0..self.reactor.slots() {
                        let hit = (self.reactor.get_mut(slot))
                            .is_some_and(|c| c.session.hit_by(k, &self.shared));
                        if hit {
                            self.end(slot, Ended::Fault);
                        }
                    }
                }
                Ok(Command::Stop) => {
                    self.stopping = true;
                    self.close_all();
                }
                Ok(Command::Exit) | Err(TryRecvError::Disconnected) => return false,
                Err(TryRecvError::Empty) => return true,
            }
        }
    }

    /// Answers due after their latency, keep-alive pings, churn.
    fn on_due(&mut self, slot: usize, now: Micros) {
        let Some(c) = self.reactor.get_mut(slot) else {
            return;
        };
        let ended = c
            .session
            .on_time(now, &self.shared, &mut c.link.stream, &mut self.outbox);
        match ended {
            Some(ended) => self.end(slot, ended),
            None => {
                self.reactor.mark_dirty(slot);
                self.arm(slot);
            }
        }
    }

    fn on_failed(&mut self, slot: usize) {
        self.end(slot, Ended::Lost);
    }

    /// Hands the turn's receipts over in one batch.
    fn end_of_turn(&mut self) {
        if let (false, Some(sink)) = (
            self.outbox.receipts.is_empty(),
            &self.shared.config.receipts,
        ) {
            sink(std::mem::take(&mut self.outbox.receipts));
        }
    }
}

impl Pump {
    fn adopt(&mut self, new: Adopted) {
        let now = self.shared.clock.now_us();
        let conn = Conn {
            link: Link::new(new.stream),
            session: Session::open(new.device, &self.shared, now),
            back: new.back,
        };
        let slot = match self.reactor.insert(conn) {
            Ok(slot) => slot,
            Err(conn) => {
                // Out of poller resources: the device reconnects after its backoff.
                self.finish(conn, Ended::Lost);
                return;
            }
        };
        if self.stopping {
            self.end(slot, Ended::Shutdown);
            return;
        }
        // Requests that came right behind SUBACK are served at once.
        self.serve(slot);
    }

    /// Reads and answers what the connection in `slot` sent.
    fn serve(&mut self, slot: usize) {
        let Some(c) = self.reactor.get_mut(slot) else {
            return;
        };
        let stream = &mut c.link.stream;
        // Whatever arrived before an end of stream is still served.
        let mut end = stream.read().is_err();
        let now = self.shared.clock.now_us();
        let mut wrote = false;
        loop {
            match stream.parse() {
                Ok(Some(packet)) => {
                    wrote |=
                        c.session
                            .on_packet(packet, now, &self.shared, stream, &mut self.outbox);
                }
                Ok(None) => break,
                Err(_) => {
                    end = true;
                    break;
                }
            }
        }
        if end {
            self.end(slot, Ended::Lost);
            return;
        }
        if wrote {
            self.reactor.mark_dirty(slot);
        }
        self.arm(slot);
    }

    /// Arms the connection's next deadline.
    fn arm(&mut self, slot: usize) {
        if let Some(at) = self
            .reactor
            .get_mut(slot)
            .map(|c| c.session.next_deadline())
        {
            self.reactor.arm(slot, at);
        }
    }

    /// Ends every session as the run stops.
    fn close_all(&mut self) {
        for slot in 0..self.reactor.slots() {
            self.end(slot, Ended::Shutdown);
        }
    }

    /// Ends the session in `slot`.
    fn end(&mut self, slot: usize, ended: Ended) {
        if let Some(c) = self.reactor.remove(slot) {
            self.finish(c, ended);
        }
    }

    /// Closes a connection after what is queued (DISCONNECT unless it failed) and sends the
    /// device back to its task.
    fn finish(&self, c: Conn, ended: Ended) {
        let Conn {
            mut link,
            session,
            back,
        } = c;
        let device = session.close(ended, &self.shared, &mut link.stream);
        link.stream.close();
        // The task is gone only if the run was dropped midway: nobody waits for the device.
        let _ = back.send(Over { device, ended });
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::atomic::Ordering;
    use std::sync::Arc;
    use std::time::Duration;

    use rumqttc::mqttbytes::v4::{ConnAck, ConnectReturnCode, Packet, Publish};
    use rumqttc::mqttbytes::QoS;
    use tokio::net::{TcpListener, TcpStream};
    use tokio::time::{timeout, Instant};
    use tokio_util::sync::CancellationToken;

    use crate::clock::Clock;
    use crate::fleet::behaviour::{Churn, CohortModel, Latency, LinkModel, MethodModel};
    use crate::fleet::credentials::{Credentials, PolicyKey};
    use crate::fleet::mqtt::{self, FleetStatus, MqttFleetConfig};
    use crate::fleet::Fleet;
    use crate::mqtt::topics::{self, DevicePublish};
    use crate::mqtt::wire::{Wire, WireError};
    use crate::shard::Shard;

    /// Long enough for anything that should happen; reached only when something is broken.
    const LIMIT: Duration = Duration::from_secs(10);

    /// A one-device fleet against a hub played by the test.
    struct Bench {
        listener: TcpListener,
        status: Arc<FleetStatus>,
        stop: CancellationToken,
        fleet: tokio::task::JoinHandle<()>,
    }

    /// Immediate 200s for methods other than `methods`; twin patches acknowledged at once.
    fn cohort(methods: HashMap<String, MethodModel>, churn: Option<Churn>) -> CohortModel {
        CohortModel::new(methods, Latency::fixed(0), 0.0, 0.0, churn)
    }

    /// Starts a fleet of one device `d0` of `cohort`.
    async fn bench(cohort: CohortModel) -> Bench {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let config = MqttFleetConfig {
            target: listener.local_addr().unwrap(),
            host_name: "hub".into(),
            tls: None,
            ramp: 1000,
            sources: Vec::new(),
            keep_alive_s: 60,
            shard: Shard::ALL,
            credentials: Credentials::Policy(PolicyKey {
                host_name: "hub".into(),
                name: "device".into(),
                key: "a2V5".into(),
            }),
            receipts: None,
        };
        let status = Arc::new(FleetStatus::default());
        let stop = CancellationToken::new();
        let fleet = mqtt::start(
            Clock::start(),
            Fleet::new(vec![(cohort, 1)], 1, Shard::ALL),
            vec!["d0".to_owned()],
            config,
            status.clone(),
            stop.clone(),
        )
        .unwrap();
        Bench {
            listener,
            status,
            stop,
            fleet: tokio::spawn(fleet),
        }
    }

    impl Bench {
        /// Accepts the device's next connection: CONNECT, CONNACK, SUBSCRIBE.
        async fn accept(&self) -> Wire<TcpStream> {
            let (sock, _) = timeout(LIMIT, self.listener.accept())
                .await
                .expect("the device connects")
                .unwrap();
            let mut wire = Wire::new(sock, 1 << 20);
            assert!(matches!(next(&mut wire).await, Ok(Packet::Connect(_))));
            wire.queue(&Packet::ConnAck(ConnAck::new(
                ConnectReturnCode::Success,
                false,
            )));
            wire.flush().await.unwrap();
            assert!(matches!(next(&mut wire).await, Ok(Packet::Subscribe(_))));
            wire
        }

        /// Stops the fleet; it must end (every connection closed) and count nobody connected.
        async fn stop(self) {
            self.stop.cancel();
            timeout(LIMIT, self.fleet)
                .await
                .expect("the fleet ends")
                .unwrap();
            assert_eq!(self.status.connected.load(Ordering::Relaxed), 0);
        }
    }

    async fn next(wire: &mut Wire<TcpStream>) -> Result<Packet, WireError> {
        timeout(LIMIT, wire.next_packet())
            .await
            .expect("a packet or the end")
    }

    fn request(wire: &mut Wire<TcpStream>, method: &str, rid: &str) {
        let topic = topics::method_request(method, rid);
        wire.queue(&Packet::Publish(Publish::new(topic, QoS::AtMostOnce, "{}")));
    }

    /// The next method answer, as (status, rid); `None` on DISCONNECT.
    async fn answer(wire: &mut Wire<TcpStream>) -> Option<(i32, String)> {
        loop {
            match next(wire).await.unwrap() {
                Packet::Publish(p) => match topics::parse_publish(&p.topic, "d0").unwrap() {
                    DevicePublish::MethodResponse { status, rid } => {
                        return Some((status, rid.to_owned()))
                    }
                    other => panic!("expected a method answer, got {other:?}"),
                },
                Packet::Disconnect => return None,
                _ => {}
            }
        }
    }

    #[tokio::test]
    async fn answers_leave_after_their_latency_in_order_and_shutdown_disconnects() {
        let slow = MethodModel {
            latency: Latency::fixed(300_000),
            error_rate: 0.0,
            error_status: 500,
            no_response: 0.0,
            ok_status: 201,
        };
        let bench = bench(cohort(HashMap::from([("slow".to_owned(), slow)]), None)).await;
        let mut hub = bench.accept().await;
        let sent = Instant::now();
        request(&mut hub, "slow", "1");
        request(&mut hub, "fast", "2");
        request(&mut hub, "slow", "3");
        hub.flush().await.unwrap();
        assert_eq!(answer(&mut hub).await, Some((200, "2".into())), "at once");
        assert_eq!(answer(&mut hub).await, Some((201, "1".into())));
        assert!(
            sent.elapsed() >= Duration::from_millis(300),
            "not before its latency"
        );
        assert_eq!(answer(&mut hub).await, Some((201, "3".into())));
        assert_eq!(bench.status.answers.load(Ordering::Relaxed), 3);
        assert_eq!(bench.status.connected.load(Ordering::Relaxed), 1);

        bench.stop.cancel();
        assert!(matches!(next(&mut hub).await, Ok(Packet::Disconnect)));
        assert!(matches!(next(&mut hub).await, Err(WireError::Closed)));
        bench.stop().await;
    }

    #[tokio::test]
    async fn a_churned_device_reconnects_and_is_served_again() {
        let churn = Churn {
            disconnects_per_hour: 36_000.0,
            downtime: Latency::fixed(20_000),
        };
        let bench = bench(cohort(HashMap::new(), Some(churn))).await;
        // The churn model drops the first connection (DISCONNECT, then the socket closes).
        let mut first = bench.accept().await;
        assert!(matches!(next(&mut first).await, Ok(Packet::Disconnect)));
        assert!(matches!(next(&mut first).await, Err(WireError::Closed)));
        // The device comes back after its downtime and answers on its new connection (if
        // churn drops that one first, on the one after).
        // The connection that answered stays open until the counters are read: closing it
        // would count as lost.
        let _answered = loop {
            let mut hub = bench.accept().await;
            request(&mut hub, "m", "7");
            hub.flush().await.unwrap();
            if let Some(got) = answer(&mut hub).await {
                assert_eq!(got, (200, "7".into()));
                break hub;
            }
        };
        let status = &bench.status;
        assert!(status.churned.load(Ordering::Relaxed) >= 1);
        assert!(status.connects.load(Ordering::Relaxed) >= 2);
        assert_eq!(status.lost.load(Ordering::Relaxed), 0);
        assert_eq!(status.failed.load(Ordering::Relaxed), 0);
        bench.stop().await;
    }

    #[tokio::test]
    async fn a_link_holds_the_request_and_the_answer_for_their_latency() {
        // 250 ms each way; the device answers at once.
        let link = LinkModel {
            latency: Latency::fixed(250_000),
            loss: 0.0,
        };
        let bench = bench(cohort(HashMap::new(), None).with_link(Some(link))).await;
        let mut hub = bench.accept().await;
        let sent = Instant::now();
        request(&mut hub, "m", "1");
        hub.flush().await.unwrap();
        assert_eq!(answer(&mut hub).await, Some((200, "1".into())));
        let took = sent.elapsed();
        assert!(
            took >= Duration::from_millis(500),
            "held 250 ms down and 250 ms up, answered after {took:?}"
        );
        bench.stop().await;
    }

    #[tokio::test]
    async fn a_link_losing_everything_never_answers() {
        let link = LinkModel {
            latency: Latency::fixed(0),
            loss: 1.0,
        };
        let bench = bench(cohort(HashMap::new(), None).with_link(Some(link))).await;
        let mut hub = bench.accept().await;
        request(&mut hub, "m", "1");
        hub.flush().await.unwrap();
        let got = timeout(Duration::from_millis(500), answer(&mut hub)).await;
        assert!(got.is_err(), "the request was lost, yet: {got:?}");
        assert_eq!(bench.status.answers.load(Ordering::Relaxed), 0);
        bench.stop().await;
    }
}
