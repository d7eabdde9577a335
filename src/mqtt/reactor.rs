//! What the hub's and the fleet's packet pumps share: one poller over many connections kept in
//! a slab, the list of connections with output to write, and one heap of their deadlines with
//! lazy re-arming (a connection has at most one live entry; older ones are skipped).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::time::Duration;

use mio::{Events, Interest, Poll, Token, Waker};
use tokio::sync::oneshot;

use crate::clock::Micros;
use crate::mqtt::stream::Stream;

/// The token of the pump's waker; connections use their slot index.
pub(crate) const WAKE: Token = Token(usize::MAX);

/// Readiness events taken per poll.
const EVENTS: usize = 1024;

/// How other threads reach a pump: each command posted wakes its poller.
pub(crate) struct Mailbox<T> {
    commands: Sender<T>,
    waker: Arc<Waker>,
}

impl<T> Clone for Mailbox<T> {
    fn clone(&self) -> Self {
        Mailbox {
            commands: self.commands.clone(),
            waker: self.waker.clone(),
        }
    }
}

impl<T> Mailbox<T> {
    /// Posts `command` (dropped if the pump has ended) and wakes the pump.
    pub(crate) fn post(&self, command: T) {
        if self.commands.send(command).is_ok() {
            let _ = self.waker.wake();
        }
    }
}

/// A poller with its mailbox: the mailbox for the senders, the poller and the receiving end for
/// the pump.
pub(crate) fn mailbox<T>() -> io::Result<(Mailbox<T>, Poll, Receiver<T>)> {
    let poll = Poll::new()?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKE)?);
    let (commands, rx) = mpsc::channel();
    Ok((Mailbox { commands, waker }, poll, rx))
}

/// Runs `pump` on a thread named `name` inside the current tokio runtime (the run's clock and
/// the tasks a pump spawns live there; an error outside one). The receiver completes when it
/// returns.
pub(crate) fn spawn(
    name: &str,
    pump: impl FnOnce() + Send + 'static,
) -> io::Result<oneshot::Receiver<()>> {
    let runtime = tokio::runtime::Handle::try_current().map_err(io::Error::other)?;
    let (done_tx, done_rx) = oneshot::channel();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let _guard = runtime.enter();
            pump();
            let _ = done_tx.send(());
        })?;
    Ok(done_rx)
}

/// The part of a served connection the reactor keeps: its stream and bookkeeping.
pub(crate) struct Link {
    /// The connection's socket and buffers.
    pub(crate) stream: Stream,
    /// Tells this connection from an earlier one in the same slot.
    generation: u64,
    /// The deadline this connection has in the heap (`Micros::MAX`: none).
    armed: Micros,
    /// In the dirty list (has output to write).
    dirty: bool,
    /// The socket took only part of the output: wait for writable.
    blocked: bool,
}

impl Link {
    /// A connection's link over `stream`.
    pub(crate) fn new(stream: Stream) -> Self {
        Link {
            stream,
            generation: 0,
            armed: Micros::MAX,
            dirty: false,
            blocked: false,
        }
    }
}

/// A connection a [`Reactor`] serves.
pub(crate) trait Served {
    /// Its link.
    fn link(&mut self) -> &mut Link;
}

/// The connections of one pump thread and their poller.
pub(crate) struct Reactor<C> {
    poll: Poll,
    events: Events,
    conns: Vec<Option<C>>,
    free: Vec<usize>,
    /// Every connection's next deadline: (when, slot, generation).
    timers: BinaryHeap<Reverse<(Micros, usize, u64)>>,
    dirty: Vec<usize>,
    /// Scratch for [`Reactor::wait`].
    writable: Vec<usize>,
    generations: u64,
}

impl<C: Served> Reactor<C> {
    /// Connections polled by `poll` (whose waker uses [`WAKE`]).
    pub(crate) fn new(poll: Poll) -> Self {
        Reactor {
            poll,
            events: Events::with_capacity(EVENTS),
            conns: Vec::new(),
            free: Vec::new(),
            timers: BinaryHeap::new(),
            dirty: Vec::new(),
            writable: Vec::new(),
            generations: 0,
        }
    }

    /// Stores `conn` and registers its socket (readable and writable, edge-triggered); gives
    /// it back if the poller refuses.
    pub(crate) fn insert(&mut self, mut conn: C) -> Result<usize, C> {
        let slot = self.free.pop().unwrap_or(self.conns.len());
        self.generations += 1;
        let link = conn.link();
        link.generation = self.generations;
        let registered = self.poll.registry().register(
            link.stream.socket(),
            Token(slot),
            Interest::READABLE | Interest::WRITABLE,
        );
        if registered.is_err() {
            self.free.push(slot);
            return Err(conn);
        }
        if slot == self.conns.len() {
            self.conns.push(Some(conn));
        } else {
            self.conns[slot] = Some(conn);
        }
        Ok(slot)
    }

    /// The connection in `slot`, if any.
    pub(crate) fn get_mut(&mut self, slot: usize) -> Option<&mut C> {
        self.conns.get_mut(slot).and_then(Option::as_mut)
    }

    /// Takes the connection out of `slot` and the poller.
    pub(crate) fn remove(&mut self, slot: usize) -> Option<C> {
        let mut conn = self.conns.get_mut(slot).and_then(Option::take)?;
        self.free.push(slot);
        let _ = self.poll.registry().deregister(conn.link().stream.socket());
        Some(conn)
    }

    /// One past the highest slot ever used (to visit every connection).
    pub(crate) fn slots(&self) -> usize {
        self.conns.len()
    }

    /// Notes that the connection in `slot` has output to write.
    pub(crate) fn mark_dirty(&mut self, slot: usize) {
        if let Some(c) = self.get_mut(slot) {
            let link = c.link();
            if !link.dirty {
                link.dirty = true;
                self.dirty.push(slot);
            }
        }
    }

    /// Puts `at` in the heap for the connection in `slot` if it is earlier than its entry
    /// there (`Micros::MAX`: nothing to arm).
    pub(crate) fn arm(&mut self, slot: usize, at: Micros) {
        if let Some(c) = self.get_mut(slot) {
            let link = c.link();
            if at < link.armed {
                link.armed = at;
                let generation = link.generation;
                self.timers.push(Reverse((at, slot, generation)));
            }
        }
    }

    /// Waits for readiness, the next deadline (at `now`, the clock's time) or the waker, at
    /// once if output is waiting. Puts the readable connections' slots in `readable`
    /// (writable ones go back to the dirty list); returns whether the waker fired.
    pub(crate) fn wait(&mut self, now: Micros, readable: &mut Vec<usize>) -> io::Result<bool> {
        let timeout = match self.dirty.is_empty() {
            false => Some(Duration::ZERO),
            true => self
                .timers
                .peek()
                .map(|Reverse((at, _, _))| Duration::from_micros(at.saturating_sub(now))),
        };
        match self.poll.poll(&mut self.events, timeout) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(false),
            other => other?,
        }
        let mut woken = false;
        let mut writable = std::mem::take(&mut self.writable);
        for event in self.events.iter() {
            match event.token() {
                WAKE => woken = true,
                Token(slot) => {
                    if event.is_writable() {
                        writable.push(slot);
                    }
                    if event.is_readable() || event.is_read_closed() || event.is_error() {
                        readable.push(slot);
                    }
                }
            }
        }
        for slot in writable.drain(..) {
            if let Some(c) = self.get_mut(slot) {
                c.link().blocked = false;
                self.mark_dirty(slot);
            }
        }
        self.writable = writable;
        Ok(woken)
    }

    /// The next connection whose deadline has come by `now` (its entry is then spent: arm it
    /// again for the next one).
    pub(crate) fn next_due(&mut self, now: Micros) -> Option<usize> {
        while let Some(&Reverse((at, slot, generation))) = self.timers.peek() {
            if at > now {
                return None;
            }
            self.timers.pop();
            let Some(c) = self.get_mut(slot) else {
                continue;
            };
            let link = c.link();
            if link.generation == generation && link.armed == at {
                link.armed = Micros::MAX;
                return Some(slot);
            }
        }
        None
    }

    /// Writes every dirty connection's output, as far as each socket takes it; the slots of
    /// connections whose socket failed go to `failed`.
    pub(crate) fn flush(&mut self, failed: &mut Vec<usize>) {
        let mut dirty = std::mem::take(&mut self.dirty);
        for slot in dirty.drain(..) {
            let Some(c) = self.get_mut(slot) else {
                continue;
            };
            let link = c.link();
            link.dirty = false;
            if link.blocked {
                continue;
            }
            match link.stream.flush() {
                Ok(true) => {}
                Ok(false) => link.blocked = true,
                Err(_) => failed.push(slot),
            }
        }
        self.dirty = dirty;
    }
}

/// A pump's own side: what it does with readable connections, commands, deadlines and failed
/// sockets. [`drive`] runs the loop around it.
pub(crate) trait Handler {
    /// The pump's connection type.
    type Conn: Served;
    /// The pump's connections.
    fn reactor(&mut self) -> &mut Reactor<Self::Conn>;
    /// The run clock's time.
    fn now(&self) -> Micros;
    /// The connection in `slot` has bytes to read (or has closed).
    fn on_readable(&mut self, slot: usize);
    /// Takes the commands waiting behind the waker; false ends the loop.
    fn on_commands(&mut self) -> bool;
    /// The deadline of the connection in `slot` has come by `now`.
    fn on_due(&mut self, slot: usize, now: Micros);
    /// The socket of the connection in `slot` failed on write.
    fn on_failed(&mut self, slot: usize);
    /// After each turn of the loop, once the output is written.
    fn end_of_turn(&mut self) {}
}

/// Runs `pump` until its commands end the loop (or the poller fails): wait, read, take
/// commands, serve deadlines, write.
pub(crate) fn drive<H: Handler>(pump: &mut H) {
    let (mut readable, mut failed) = (Vec::new(), Vec::new());
    loop {
        let now = pump.now();
        let Ok(woken) = pump.reactor().wait(now, &mut readable) else {
            break;
        };
        for slot in readable.drain(..) {
            pump.on_readable(slot);
        }
        if woken && !pump.on_commands() {
            break;
        }
        let now = pump.now();
        while let Some(slot) = pump.reactor().next_due(now) {
            pump.on_due(slot, now);
        }
        pump.reactor().flush(&mut failed);
        for slot in failed.drain(..) {
            pump.on_failed(slot);
        }
        pump.end_of_turn();
    }
}
