//! The in-process fleet's timers: every future answer, acknowledgement, disconnect, reconnect and
//! link arrival of a million devices, earliest first, ties in the order they were set.
//!
//! A million devices each have a disconnect hours ahead. One heap of them all costs a cache miss
//! per level on every push and pop, and a tree of one-second buckets a miss per tree level on
//! every push. So only timers before `horizon` sit in a heap; later ones wait in one-second
//! buckets on a ring indexed by the second, and move into the heap a bucket at a time when it runs
//! dry. Timers beyond the ring's reach (more than [`RING_BUCKETS`] seconds ahead, rare) wait in an
//! ordered map until the ring comes near them.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};

use crate::clock::Micros;

/// Width of a far bucket.
const BUCKET_US: Micros = 1_000_000;

/// How many one-second buckets the ring spans at most (about 12 days): its memory stays bounded
/// whatever a latency distribution draws.
const RING_BUCKETS: u64 = 1 << 20;

/// Timers carrying events of type `E`.
#[derive(Debug)]
pub(super) struct Timers<E> {
    near: BinaryHeap<Timer<E>>,
    /// Bucket `base + i` holds the timers of second `base + i`.
    ring: VecDeque<Vec<Timer<E>>>,
    /// The second of `ring[0]`; every timer in `near` is before it.
    base: u64,
    /// Timers at or after second `base + RING_BUCKETS`, by second.
    beyond: BTreeMap<u64, Vec<Timer<E>>>,
    /// Timers set so far: the tie-break of equal times.
    seq: u64,
}

impl<E> Default for Timers<E> {
    fn default() -> Self {
        Timers {
            near: BinaryHeap::new(),
            ring: VecDeque::new(),
            base: 0,
            beyond: BTreeMap::new(),
            seq: 0,
        }
    }
}

impl<E> Timers<E> {
    /// Sets a timer for `event` at `at`.
    pub(super) fn push(&mut self, at: Micros, event: E) {
        self.seq += 1;
        let timer = Timer {
            at,
            seq: self.seq,
            event,
        };
        let second = at / BUCKET_US;
        if second < self.base {
            self.near.push(timer);
        } else if second - self.base < RING_BUCKETS {
            let i = (second - self.base) as usize;
            if i >= self.ring.len() {
                self.ring.resize_with(i + 1, Vec::new);
            }
            self.ring[i].push(timer);
        } else {
            self.beyond.entry(second).or_default().push(timer);
        }
    }

    /// When the earliest timer is due.
    pub(super) fn next_at(&mut self) -> Option<Micros> {
        self.refill();
        self.near.peek().map(|t| t.at)
    }

    /// Takes the earliest timer: its time and event.
    pub(super) fn pop(&mut self) -> Option<(Micros, E)> {
        self.refill();
        self.near.pop().map(|t| (t.at, t.event))
    }

    /// Refills the heap from the first non-empty bucket when it is empty.
    fn refill(&mut self) {
        while self.near.is_empty() {
            if self.ring.is_empty() {
                // Jump to the first timer beyond, if any.
                let Some(&first) = self.beyond.keys().next() else {
                    return;
                };
                self.base = first;
            }
            self.pull_beyond();
            let Some(bucket) = self.ring.pop_front() else {
                return;
            };
            self.base += 1;
            self.near.extend(bucket);
        }
    }

    /// Moves the timers beyond that the ring now reaches onto it (each second's timers join the
    /// ones set on the ring since: the heap orders them when their bucket comes).
    fn pull_beyond(&mut self) {
        while let Some(mut entry) = self.beyond.first_entry() {
            let i = entry.key() - self.base;
            if i >= RING_BUCKETS {
                break;
            }
            let i = i as usize;
            if i >= self.ring.len() {
                self.ring.resize_with(i + 1, Vec::new);
            }
            self.ring[i].append(entry.get_mut());
            entry.remove();
        }
    }
}

#[derive(Debug)]
struct Timer<E> {
    at: Micros,
    seq: u64,
    event: E,
}

impl<E> PartialEq for Timer<E> {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl<E> Eq for Timer<E> {}
impl<E> PartialOrd for Timer<E> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<E> Ord for Timer<E> {
    /// Reversed: the heap pops the earliest timer first.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pushes `times` in order (popping now and then, as the fleet does while it runs) and checks
    /// that every pop is the earliest timer left, ties in the order they were set.
    fn check(times: impl IntoIterator<Item = Micros>) {
        let mut timers = Timers::default();
        let mut want = Vec::new();
        for (n, at) in times.into_iter().enumerate() {
            timers.push(at, n);
            want.push((at, n));
            if n % 97 == 0 {
                want.sort_unstable();
                assert_eq!(timers.pop(), Some(want.remove(0)));
            }
        }
        want.sort_unstable();
        let mut got = Vec::new();
        while let Some(t) = timers.pop() {
            got.push(t);
        }
        assert_eq!(got, want);
        assert_eq!(timers.next_at(), None);
    }

    #[test]
    fn timers_pop_earliest_first_across_buckets() {
        // Times spread over ten minutes, some equal, set out of order.
        check((0..5_000u64).map(|seq| (seq * 7_919_123) % 600_000_000 / 1_000 * 1_000));
    }

    #[test]
    fn timers_beyond_the_ring_come_in_order() {
        // Spread over 60 days, well past the ring's 12: the far ones wait beyond it, and a pop
        // now and then jumps the ring forward.
        let span = 60 * 86_400 * BUCKET_US;
        check((0..5_000u64).map(|seq| (seq * 7_919_123_456_789) % span));
    }
}
