//! The fleet's packet pump: one thread serving every established device connection of this
//! process from one poller. A connection is data here (its [`Stream`] and [`Session`]), not a
//! task: a readable socket is read, parsed and answered in place, and one heap holds every
//! connection's next deadline (answers due after their latency, keep-alive pings, churn).
//!
//! Connections arrive established: [`super::client`] dials, runs TLS, CONNECT and SUBSCRIBE in
//! tokio, then hands the connection over with [`PumpHandle::adopt`] and waits for the device to
//! come back when the session ends ([`Over`]), to reconnect after its downtime or backoff.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::sync::Arc;
use std::time::Duration;

use mio::{Events, Interest, Poll, Token, Waker};
use tokio::sync::oneshot;

use crate::clock::Micros;
use crate::fleet::mqtt::client::Device;
use crate::fleet::mqtt::session::{AnswerPacket, Ended, Session};
use crate::fleet::mqtt::Shared;
use crate::mqtt::stream::Stream;

/// The waker's token; connections use their slot index.
const WAKE: Token = Token(usize::MAX);

/// Readiness events taken per poll.
const EVENTS: usize = 1024;

/// A device back from the pump: its session has ended.
pub struct Over {
    /// The device, with its behaviour state as the session left it.
    pub device: Device,
    /// How the session ended.
    pub ended: Ended,
}

/// A connection for the pump to serve.
struct Adopted {
    stream: Stream,
    device: Device,
    back: oneshot::Sender<Over>,
}

enum Command {
    Adopt(Box<Adopted>),
    /// Close every connection (with DISCONNECT), and every one adopted from now on.
    Stop,
    /// End the thread.
    Exit,
}

/// How device tasks reach the pump.
pub struct PumpHandle {
    commands: Sender<Command>,
    waker: Arc<Waker>,
}

impl PumpHandle {
    fn send(&self, command: Command) {
        // A pump that has ended drops what it is sent: an adopted device's receiver then
        // reports the pump gone.
        if self.commands.send(command).is_ok() {
            let _ = self.waker.wake();
        }
    }

    /// Serves `device`'s established connection `stream` from now on; the receiver gets the
    /// device back when the session ends (an error: the pump is gone).
    pub fn adopt(&self, stream: Stream, device: Device) -> oneshot::Receiver<Over> {
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
    pub fn stop(&self) {
        self.send(Command::Stop);
    }

    /// Ends the pump thread (closing what it still serves).
    pub fn exit(&self) {
        self.send(Command::Exit);
    }
}

/// The pump's end of the commands, until its thread starts.
pub struct Inbox {
    poll: Poll,
    commands: Receiver<Command>,
}

/// The pump's command channel: the handle for the device tasks and the inbox for
/// [`spawn`].
pub fn channel() -> io::Result<(PumpHandle, Inbox)> {
    let poll = Poll::new()?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKE)?);
    let (commands, rx) = mpsc::channel();
    Ok((PumpHandle { commands, waker }, Inbox { poll, commands: rx }))
}

/// Starts the pump thread on `inbox`, inside the current tokio runtime (its clock); the
/// returned receiver completes when the thread has closed every connection and ended.
pub fn spawn(inbox: Inbox, shared: Arc<Shared>) -> io::Result<oneshot::Receiver<()>> {
    let (done_tx, done_rx) = oneshot::channel();
    let runtime = tokio::runtime::Handle::current();
    let mut pump = Pump {
        poll: inbox.poll,
        commands: inbox.commands,
        shared,
        conns: Vec::new(),
        free: Vec::new(),
        timers: BinaryHeap::new(),
        dirty: Vec::new(),
        generation: 0,
        stopping: false,
        answer: AnswerPacket::default(),
    };
    std::thread::Builder::new()
        .name("mqtt-fleet-pump".into())
        .spawn(move || {
            let _guard = runtime.enter();
            pump.run();
            let _ = done_tx.send(());
        })?;
    Ok(done_rx)
}

/// One served connection.
struct Conn {
    stream: Stream,
    session: Session,
    back: oneshot::Sender<Over>,
    /// Tells this connection from an earlier one in the same slot (timer entries of those are
    /// stale).
    generation: u32,
    /// The deadline this connection has in the timer heap (`Micros::MAX`: none). Entries of
    /// other deadlines are stale and skipped.
    armed: Micros,
    /// In the dirty list (has output to write).
    dirty: bool,
    /// The socket took only part of the output: wait for writable.
    blocked: bool,
}

struct Pump {
    poll: Poll,
    commands: Receiver<Command>,
    shared: Arc<Shared>,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    /// Every connection's next deadline: (when, slot, generation).
    timers: BinaryHeap<Reverse<(Micros, usize, u32)>>,
    dirty: Vec<usize>,
    generation: u32,
    /// Told to stop: newcomers are closed at once.
    stopping: bool,
    answer: AnswerPacket,
}

impl Pump {
    fn run(&mut self) {
        let mut events = Events::with_capacity(EVENTS);
        loop {
            let timeout = self.timers.peek().map(|Reverse((at, _, _))| {
                Duration::from_micros(at.saturating_sub(self.shared.clock.now_us()))
            });
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != io::ErrorKind::Interrupted {
                    break;
                }
            }
            let mut woken = false;
            for event in events.iter() {
                match event.token() {
                    WAKE => woken = true,
                    Token(slot) => {
                        if event.is_writable() {
                            if let Some(c) = self.conns.get_mut(slot).and_then(Option::as_mut) {
                                c.blocked = false;
                                self.mark_dirty(slot);
                            }
                        }
                        if event.is_readable() || event.is_read_closed() || event.is_error() {
                            self.on_readable(slot);
                        }
                    }
                }
            }
            if woken && !self.on_commands() {
                break;
            }
            self.on_timers();
            self.flush();
        }
        self.close_all();
    }

    /// Takes every waiting command; false once told to exit.
    fn on_commands(&mut self) -> bool {
        loop {
            match self.commands.try_recv() {
                Ok(Command::Adopt(new)) => self.adopt(*new),
                Ok(Command::Stop) => {
                    self.stopping = true;
                    self.close_all();
                }
                Ok(Command::Exit) | Err(TryRecvError::Disconnected) => return false,
                Err(TryRecvError::Empty) => return true,
            }
        }
    }

    fn adopt(&mut self, new: Adopted) {
        let now = self.shared.clock.now_us();
        let slot = self.free.pop().unwrap_or(self.conns.len());
        self.generation = self.generation.wrapping_add(1);
        let conn = Conn {
            stream: new.stream,
            session: Session::open(new.device, &self.shared, now),
            back: new.back,
            generation: self.generation,
            armed: Micros::MAX,
            dirty: false,
            blocked: false,
        };
        if slot == self.conns.len() {
            self.conns.push(Some(conn));
        } else {
            self.conns[slot] = Some(conn);
        }
        if self.stopping {
            self.end(slot, Ended::Shutdown);
            return;
        }
        let Some(c) = self.conns[slot].as_mut() else {
            return;
        };
        let registered = self.poll.registry().register(
            c.stream.socket(),
            Token(slot),
            Interest::READABLE | Interest::WRITABLE,
        );
        if registered.is_err() {
            // Out of poller resources: the device reconnects after its backoff.
            self.end(slot, Ended::Lost);
            return;
        }
        // Requests that came right behind SUBACK are served at once.
        self.on_readable(slot);
    }

    fn on_readable(&mut self, slot: usize) {
        let Some(c) = self.conns.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        // Whatever arrived before an end of stream is still served.
        let mut end = c.stream.read().is_err();
        let now = self.shared.clock.now_us();
        let mut wrote = false;
        loop {
            match c.stream.parse() {
                Ok(Some(packet)) => {
                    wrote |= c.session.on_packet(
                        packet,
                        now,
                        &self.shared,
                        &mut c.stream,
                        &mut self.answer,
                    );
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
            self.mark_dirty(slot);
        }
        self.arm(slot);
    }

    fn mark_dirty(&mut self, slot: usize) {
        if let Some(c) = self.conns[slot].as_mut() {
            if !c.dirty {
                c.dirty = true;
                self.dirty.push(slot);
            }
        }
    }

    /// Writes every connection's output, as far as each socket takes it.
    fn flush(&mut self) {
        let mut dirty = std::mem::take(&mut self.dirty);
        for slot in dirty.drain(..) {
            let Some(c) = self.conns[slot].as_mut() else {
                continue;
            };
            c.dirty = false;
            if c.blocked {
                continue;
            }
            match c.stream.flush() {
                Ok(true) => {}
                Ok(false) => c.blocked = true,
                Err(_) => self.end(slot, Ended::Lost),
            }
        }
        self.dirty = dirty;
    }

    /// Puts the connection's next deadline in the heap if it is earlier than the one there.
    fn arm(&mut self, slot: usize) {
        if let Some(c) = self.conns[slot].as_mut() {
            let at = c.session.next_deadline();
            if at < c.armed {
                c.armed = at;
                self.timers.push(Reverse((at, slot, c.generation)));
            }
        }
    }

    /// Serves every deadline that has come, and arms each connection's next one.
    fn on_timers(&mut self) {
        let now = self.shared.clock.now_us();
        while let Some(&Reverse((at, slot, generation))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            let Some(c) = self.conns.get_mut(slot).and_then(Option::as_mut) else {
                continue;
            };
            if c.generation != generation || c.armed != at {
                continue;
            }
            c.armed = Micros::MAX;
            let ended = c
                .session
                .on_time(now, &self.shared, &mut c.stream, &mut self.answer);
            match ended {
                Some(ended) => self.end(slot, ended),
                None => {
                    self.mark_dirty(slot);
                    self.arm(slot);
                }
            }
        }
    }

    /// Ends every session as the run stops.
    fn close_all(&mut self) {
        for slot in 0..self.conns.len() {
            self.end(slot, Ended::Shutdown);
        }
    }

    /// Ends the session in `slot`: the socket closes after what is queued (DISCONNECT unless
    /// the connection failed) and the device goes back to its task.
    fn end(&mut self, slot: usize, ended: Ended) {
        let Some(mut c) = self.conns.get_mut(slot).and_then(Option::take) else {
            return;
        };
        self.free.push(slot);
        let _ = self.poll.registry().deregister(c.stream.socket());
        let device = c.session.close(ended, &self.shared, &mut c.stream);
        c.stream.close();
        // The task is gone only if the run was dropped midway: nobody waits for the device.
        let _ = c.back.send(Over { device, ended });
    }
}
