//! The packet pump: one thread serving every established device connection of the endpoint
//! from one poller. A connection is data here (its [`Stream`], [`Session`] and timers), not a
//! task: a readable socket is read, parsed and answered in place, the engine's messages arrive
//! in batches, and one heap holds every connection's next deadline. What needs the engine's
//! answer (twin reads and reported patches) runs as a tokio task whose answer comes back as a
//! command.
//!
//! Connections arrive established: [`super::conn`] does TLS, CONNECT and authentication in
//! tokio, then hands the connection over with [`PumpHandle::adopt`].

use std::collections::{HashMap, VecDeque};
use std::io;
use std::sync::mpsc::Receiver;
use std::sync::Arc;

use rumqttc::mqttbytes::v4::Packet;

use crate::clock::Micros;
use crate::hub::mqtt::session::{Action, Session, TwinRequest};
use crate::hub::mqtt::{conn, Endpoint};
use crate::ids::DeviceIdx;
use crate::link::{FromDevice, ToDevice};
use crate::mqtt::reactor::{self, Handler, Link, Mailbox, Reactor, Served};
use crate::mqtt::stream::Stream;

/// A connection ready to be served: CONNECT accepted and CONNACK written.
pub(crate) struct Adopted {
    /// The socket, its TLS state and any bytes already read.
    pub(crate) stream: Stream,
    /// The device's session.
    pub(crate) session: Session,
    /// The session's generation in [`super::Sessions`].
    pub(crate) generation: u64,
    /// The keep-alive the device asked for, in seconds (0: none).
    pub(crate) keep_alive_s: u16,
}

enum Command {
    Adopt(Box<Adopted>),
    Deliver(Vec<ToDevice>),
    /// The answer to a twin request of the connection in `slot` (if still of `generation`).
    Answer {
        slot: usize,
        generation: u64,
        packet: Packet,
    },
    Stop,
}

/// How the rest of the hub reaches the pump.
/// A pump that has stopped drops what it is sent: the hub is shutting down.
#[derive(Clone)]
pub(crate) struct PumpHandle(Mailbox<Command>);

impl PumpHandle {
    fn send(&self, command: Command) {
        self.0.post(command);
    }

    /// Serves `conn` from now on.
    pub(crate) fn adopt(&self, conn: Adopted) {
        self.send(Command::Adopt(Box::new(conn)));
    }

    /// Delivers the engine's messages to their devices' sessions.
    pub(crate) fn deliver(&self, batch: Vec<ToDevice>) {
        self.send(Command::Deliver(batch));
    }

    /// Closes every connection and ends the pump.
    pub(crate) fn stop(&self) {
        self.send(Command::Stop);
    }
}

/// Starts the pump thread; the returned receiver completes when it has closed every connection.
pub(crate) fn start(
    endpoint: Arc<Endpoint>,
) -> io::Result<(PumpHandle, tokio::sync::oneshot::Receiver<()>)> {
    let (mailbox, poll, rx) = reactor::mailbox()?;
    let handle = PumpHandle(mailbox);
    let mut pump = Pump {
        reactor: Reactor::new(poll),
        commands: rx,
        handle: handle.clone(),
        endpoint,
        by_device: HashMap::new(),
        to_engine: Vec::new(),
        actions: Vec::new(),
    };
    let done_rx = reactor::spawn("mqtt-pump", move || pump.run())?;
    Ok((handle, done_rx))
}

/// One served connection.
struct Conn {
    link: Link,
    session: Session,
    /// The session's generation in [`super::Sessions`].
    generation: u64,
    /// The longest silence allowed: 1.5 × the keep-alive (MQTT 3.1.1 §3.1.2.10); none for 0.
    silence_us: Option<Micros>,
    last_heard: Micros,
    /// Twin requests waiting for the one in flight (answered in order).
    twin_queue: VecDeque<TwinRequest>,
    twin_busy: bool,
}

impl Served for Conn {
    fn link(&mut self) -> &mut Link {
        &mut self.link
    }
}

impl Conn {
    /// The next time this connection needs attention: a held request's deadline or the
    /// keep-alive check.
    fn next_deadline(&self) -> Micros {
        let keep_alive = self
            .silence_us
            .map_or(Micros::MAX, |s| self.last_heard.saturating_add(s));
        self.session
            .next_deadline()
            .map_or(keep_alive, |d| d.min(keep_alive))
    }
}

struct Pump {
    reactor: Reactor<Conn>,
    commands: Receiver<Command>,
    handle: PumpHandle,
    endpoint: Arc<Endpoint>,
    by_device: HashMap<DeviceIdx, usize>,
    to_engine: Vec<FromDevice>,
    actions: Vec<Action>,
}

impl Pump {
    fn run(&mut self) {
        reactor::drive(self);
        for slot in 0..self.reactor.slots() {
            self.close(slot);
        }
        self.send_to_engine();
    }
}

impl Handler for Pump {
    type Conn = Conn;

    fn reactor(&mut self) -> &mut Reactor<Conn> {
        &mut self.reactor
    }

    fn now(&self) -> Micros {
        self.endpoint.clock.now_us()
    }

    fn on_readable(&mut self, slot: usize) {
        self.serve(slot);
    }

    /// Takes every waiting command; false once told to stop.
    fn on_commands(&mut self) -> bool {
        while let Ok(command) = self.commands.try_recv() {
            match command {
                Command::Adopt(conn) => self.adopt(*conn),
                Command::Deliver(batch) => self.deliver(batch),
                Command::Answer {
                    slot,
                    generation,
                    packet,
                } => self.on_answer(slot, generation, packet),
                Command::Stop => return false,
            }
        }
        true
    }

    /// Held requests that expire, and keep-alive checks (a connection silent for 1.5
    /// keep-alives is closed).
    fn on_due(&mut self, slot: usize, now: Micros) {
        let Some(c) = self.reactor.get_mut(slot) else {
            return;
        };
        if c.silence_us
            .is_some_and(|s| c.last_heard.saturating_add(s) <= now)
        {
            self.close(slot);
            return;
        }
        c.session.on_time(now, &mut self.actions);
        self.perform(slot);
        self.arm(slot);
    }

    fn on_failed(&mut self, slot: usize) {
        self.close(slot);
    }

    fn end_of_turn(&mut self) {
        self.send_to_engine();
    }
}

impl Pump {
    fn adopt(&mut self, new: Adopted) {
        let device = new.session.device();
        if let Some(old) = self.by_device.get(&device).copied() {
            // The device connected again: the new connection replaces the old one.
            self.close(old);
        }
        let conn = Conn {
            link: Link::new(new.stream),
            session: new.session,
            generation: new.generation,
            silence_us: match new.keep_alive_s {
                0 => None,
                s => Some(s as Micros * 1_500_000),
            },
            last_heard: self.endpoint.clock.now_us(),
            twin_queue: VecDeque::new(),
            twin_busy: false,
        };
        match self.reactor.insert(conn) {
            Ok(slot) => {
                self.by_device.insert(device, slot);
                // Packets that came with CONNECT (a SUBSCRIBE right behind it) are served at once.
                self.serve(slot);
            }
            Err(_) => {
                // Out of poller resources: the device sees its connection close and reconnects.
                if self.endpoint.sessions.close(device, new.generation) {
                    self.to_engine.push(FromDevice::Disconnected { device });
                }
            }
        }
    }

    fn deliver(&mut self, batch: Vec<ToDevice>) {
        let now = self.endpoint.clock.now_us();
        for msg in batch {
            // No connection: it has just closed, and the engine times the operation out.
            let Some(slot) = self.by_device.get(&msg.device()).copied() else {
                continue;
            };
            if let ToDevice::Disconnect { .. } = msg {
                self.close(slot);
                continue;
            }
            let Some(c) = self.reactor.get_mut(slot) else {
                continue;
            };
            c.session.on_hub(msg, now, &mut self.actions);
            self.perform(slot);
            self.arm(slot);
        }
    }

    /// Reads and serves what the connection in `slot` sent.
    fn serve(&mut self, slot: usize) {
        let now = self.endpoint.clock.now_us();
        let Some(c) = self.reactor.get_mut(slot) else {
            return;
        };
        let stream = &mut c.link.stream;
        let read = stream.read();
        c.last_heard = now;
        // Whatever arrived before an end of stream is still served.
        let mut end = read.is_err();
        loop {
            match stream.parse() {
                Ok(Some(Packet::Disconnect)) => {
                    end = true;
                    break;
                }
                Ok(Some(packet)) => {
                    if c.session.on_packet(packet, now, &mut self.actions).is_err() {
                        end = true;
                        break;
                    }
                }
                Ok(None) => break,
                Err(_) => {
                    end = true;
                    break;
                }
            }
        }
        self.perform(slot);
        if end {
            self.close(slot);
        } else {
            self.arm(slot);
        }
    }

    /// Carries out the actions the session produced for the connection in `slot`.
    fn perform(&mut self, slot: usize) {
        let Some(c) = self.reactor.get_mut(slot) else {
            self.actions.clear();
            return;
        };
        let mut wrote = false;
        for action in self.actions.drain(..) {
            match action {
                Action::Send(packet) => {
                    c.link.stream.queue(&packet);
                    wrote = true;
                }
                Action::Engine(msg) => self.to_engine.push(msg),
                Action::Twin(request) => c.twin_queue.push_back(request),
            }
        }
        if wrote {
            self.reactor.mark_dirty(slot);
        }
        self.next_twin(slot);
    }

    /// Starts the connection's next twin request unless one is in flight.
    fn next_twin(&mut self, slot: usize) {
        let Some(c) = self.reactor.get_mut(slot) else {
            return;
        };
        if c.twin_busy {
            return;
        }
        let Some(request) = c.twin_queue.pop_front() else {
            return;
        };
        c.twin_busy = true;
        let (endpoint, handle) = (self.endpoint.clone(), self.handle.clone());
        let (device, generation) = (c.session.device(), c.generation);
        tokio::spawn(async move {
            let packet = conn::answer_twin(&endpoint, device, request).await;
            handle.send(Command::Answer {
                slot,
                generation,
                packet,
            });
        });
    }

    fn on_answer(&mut self, slot: usize, generation: u64, packet: Packet) {
        match self.reactor.get_mut(slot) {
            Some(c) if c.generation == generation => {
                c.link.stream.queue(&packet);
                c.twin_busy = false;
                self.reactor.mark_dirty(slot);
                self.next_twin(slot);
            }
            // The connection closed while the engine answered.
            _ => {}
        }
    }

    fn send_to_engine(&mut self) {
        if !self.to_engine.is_empty() {
            let _ = self
                .endpoint
                .to_engine
                .send(std::mem::take(&mut self.to_engine));
        }
    }

    /// Arms the connection's next deadline.
    fn arm(&mut self, slot: usize) {
        if let Some(at) = self.reactor.get_mut(slot).map(|c| c.next_deadline()) {
            self.reactor.arm(slot, at);
        }
    }

    /// Ends the connection in `slot`: its held requests fail, the engine hears of the
    /// disconnection (unless a newer connection of the device took over), and the socket
    /// closes after what is queued.
    fn close(&mut self, slot: usize) {
        let Some(mut c) = self.reactor.remove(slot) else {
            return;
        };
        let device = c.session.device();
        if self.by_device.get(&device) == Some(&slot) {
            self.by_device.remove(&device);
        }
        c.session.close(&mut self.actions);
        for action in self.actions.drain(..) {
            if let Action::Engine(msg) = action {
                self.to_engine.push(msg);
            }
        }
        if self.endpoint.sessions.close(device, c.generation) {
            self.to_engine.push(FromDevice::Disconnected { device });
        }
        c.link.stream.close();
    }
}
