//! What the hub's and the fleet's packet pumps share: one poller over many connections kept in
//! a slab, the list of connections with output to write, and one heap of their deadlines with
//! lazy re-arming (a connection has at most one live entry; older ones are skipped).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::time::Duration;

use mio::{Events, Interest, Poll, Token};

use crate::clock::Micros;
use crate::mqtt::stream::Stream;

/// The token of the pump's waker; connections use their slot index.
pub const WAKE: Token = Token(usize::MAX);

/// Readiness events taken per poll.
const EVENTS: usize = 1024;

/// The part of a served connection the reactor keeps: its stream and bookkeeping.
pub struct Link {
    /// The connection's socket and buffers.
    pub stream: Stream,
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
    pub fn new(stream: Stream) -> Self {
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
pub trait Served {
    /// Its link.
    fn link(&mut self) -> &mut Link;
}

/// The connections of one pump thread and their poller.
pub struct Reactor<C> {
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
    pub fn new(poll: Poll) -> Self {
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
    pub fn insert(&mut self, mut conn: C) -> Result<usize, C> {
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
    pub fn get_mut(&mut self, slot: usize) -> Option<&mut C> {
        self.conns.get_mut(slot).and_then(Option::as_mut)
    }

    /// Takes the connection out of `slot` and the poller.
    pub fn remove(&mut self, slot: usize) -> Option<C> {
        let mut conn = self.conns.get_mut(slot).and_then(Option::take)?;
        self.free.push(slot);
        let _ = self.poll.registry().deregister(conn.link().stream.socket());
        Some(conn)
    }

    /// One past the highest slot ever used (to visit every connection).
    pub fn slots(&self) -> usize {
        self.conns.len()
    }

    /// Notes that the connection in `slot` has output to write.
    pub fn mark_dirty(&mut self, slot: usize) {
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
    pub fn arm(&mut self, slot: usize, at: Micros) {
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
    pub fn wait(&mut self, now: Micros, readable: &mut Vec<usize>) -> io::Result<bool> {
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
    pub fn next_due(&mut self, now: Micros) -> Option<usize> {
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
    pub fn flush(&mut self, failed: &mut Vec<usize>) {
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
