//! The hub's store: the registry, the twins and the jobs with their device records, kept in a
//! SQLite database (`hub.db` in the state directory, WAL mode) so that a hub survives `kill -9`.
//!
//! The engine stays the only owner of hub state and never waits for the disk. During a turn it
//! notes what changed ([`Journal`]: devices, job headers, finished device operations), as plain
//! data with no formatting; at the end of the turn it hands the batch to a writer thread. The
//! writer takes every batch waiting, writes them in one transaction and commits (group commit),
//! and tells the engine, which only then releases the answers those batches hold back: the REST
//! reply to a write, the MQTT acknowledgement of a reported patch. So an answered write is
//! committed (to the log, in
//! the system's file cache: it survives the process's death at any instant; see `schema` for
//! a crash of the machine), and the engine goes on working while the writer commits.
//!
//! What is kept, and what a restart makes of it:
//! - every device (id, twin with tags, desired, reported, versions and so etags), and the
//!   deletion of a scenario's device;
//! - every job: its request, status, times and failure reason, the devices a running job
//!   targets, and each device operation's result once it has one. Statistics are counted
//!   again from the results.
//! - A device operation in flight at the crash has no result: after the restart it is pending
//!   again and is dispatched again (at least once: a device may receive a job's method twice,
//!   and it is counted once).
//! - A `hub_restart` fault reads the store back the same way ([`Journal::reload`]): the writer
//!   commits what was handed to it, then loads, so the engine restarts from what a hub started
//!   again on the directory would find.
//! - Not kept: connection state (devices reconnect), direct method calls in flight (their
//!   callers got no answer), measurements (histograms start again at the restart), a rollout's
//!   internal job controls (rate, abort criteria, acknowledged success).
//!
//! If a commit fails (a full disk), the hub stops: its memory is then ahead of its file, and
//! whatever it answered from then on could not be trusted (the lesson of PostgreSQL's
//! "fsyncgate": after a failed write, stop and recover from what is saved). The writes the
//! failed commit held, and every one handed over after it, are answered 500 `ServerError`;
//! the writer never writes again, and the engine ends with [`CommitFailed`], which names the
//! file and SQLite's error. Started again, the hub resumes from the last commit.
//!
//! Why SQLite (rusqlite with the bundled library) rather than redb: measured on the 2-core
//! development machine (2026-12-03, 300-byte rows keyed by device id, every commit synced),
//! SQLite in WAL mode wrote 1.03 million rows/s in transactions of 256 rows and 1.00 million in
//! transactions of 4,096, redb 161,000 and 220,000; single-row commits were alike (3,300 and
//! 4,000 per second). SQLite costs more to build from scratch: 61 s of one core for the C
//! library and the bindings, against 17 s for redb.
//!
//! - `schema`: opening the database, its version and the refusal of a foreign or newer one.
//! - `codec`: twins and device results as rows.
//! - `writer`: the writer thread.

mod codec;
mod schema;
mod writer;

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;

use serde_json::Value;
use time::OffsetDateTime;
use tokio::sync::watch;

use crate::clock::Micros;
use crate::hub::error::HubError;
use crate::hub::jobs::{DeviceError, DeviceStatus};
use crate::hub::twin::Twin;

pub(crate) use codec::JobHeader;

/// The database file in the state directory.
pub(crate) const STORE_FILE: &str = "hub.db";

/// The device log's size (in rows) below which it is never replaced by a snapshot: a
/// snapshot costs a write of every device, so the log grows at least as large as the registry
/// first (measured on the development machine: a snapshot of 100,000 devices takes about
/// 1 s, folding a log row into the table in place about 25 µs).
const LOG_CAP: u64 = 262_144;

/// The name of the writer thread (what `/proc/PID/task/*/comm` shows).
const WRITER_THREAD: &str = "fleetsim-store";

/// Why the store could not be opened or read.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite refused the file or an operation on it.
    #[error("{}: {cause}; {hint}", path.display())]
    Database {
        /// The database file.
        path: PathBuf,
        /// What SQLite said (in the message: not repeated as a source).
        cause: rusqlite::Error,
        /// What the user can do.
        hint: &'static str,
    },
    /// The file is not a fleetsim store, or one of a newer fleetsim.
    #[error("{}: {what}; {hint}", path.display())]
    Foreign {
        /// The database file.
        path: PathBuf,
        /// What is wrong with it.
        what: String,
        /// What the user can do.
        hint: &'static str,
    },
    /// A row holds something fleetsim did not write.
    #[error("{}: {what}; the file is damaged: move it away to start with an empty hub", path.display())]
    Row {
        /// The database file.
        path: PathBuf,
        /// The row and what is wrong with it.
        what: String,
    },
}

/// A commit failed: the store holds less than the hub answered from memory, so the hub stops.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the hub's store {} could not commit: {cause}; the hub stopped so that nothing is answered \
     that is not saved — {hint}, then start it again: it resumes from what was committed",
    path.display()
)]
pub struct CommitFailed {
    /// The database file.
    path: PathBuf,
    /// What SQLite said (and the system, behind an I/O error).
    cause: String,
    /// What the user can do.
    hint: &'static str,
}

impl CommitFailed {
    /// The failure `source` of a commit to the store at `path`, with the system's error behind
    /// it if SQLite saw one (`os`: SQLite reports a failed write as "disk I/O error" unless the
    /// system said ENOSPC).
    fn new(path: &Path, source: rusqlite::Error, os: Option<std::io::Error>) -> Self {
        let hint = match os.as_ref().and_then(std::io::Error::raw_os_error) {
            Some(libc::ENOSPC) => schema::DISK_FULL,
            Some(libc::EDQUOT) => "the disk quota is full: free some space or raise the quota",
            Some(libc::EFBIG) => {
                "the file is full: it reached the largest size the system lets this process \
                 write (`ulimit -f`) or the file system allows; raise the limit or move the state \
                 directory"
            }
            _ => schema::hint(&source),
        };
        let cause = match os {
            Some(os) => format!("{source}: {os}"),
            None => source.to_string(),
        };
        CommitFailed {
            path: path.to_owned(),
            cause,
            hint,
        }
    }

    /// The writer thread of the store at `path` panicked: nothing is saved any more.
    fn writer_died(path: &Path) -> Self {
        CommitFailed {
            path: path.to_owned(),
            cause: "its writer thread died (a fleetsim bug)".into(),
            hint: "report it",
        }
    }
}

/// A device as the store keeps it.
#[derive(Debug)]
pub(crate) struct SavedDevice {
    /// The device id.
    pub(crate) id: String,
    /// Its twin and status, or None: a deleted device.
    pub(crate) twin: Option<(Twin, bool)>,
}

/// A device operation's result as the store keeps it.
#[derive(Debug, Clone)]
pub(crate) struct SavedResult {
    /// The record's position in its job.
    pub(crate) record: u32,
    /// A terminal status.
    pub(crate) status: DeviceStatus,
    /// Why it failed.
    pub(crate) error: DeviceError,
    /// The device's method status.
    pub(crate) method_status: i32,
    /// When it was meant to happen.
    pub(crate) scheduled_us: Micros,
    /// When it was dispatched.
    pub(crate) start_us: Micros,
    /// When it ended.
    pub(crate) end_us: Micros,
    /// The device's answer.
    pub(crate) payload: Option<Box<Value>>,
}

/// A job as the store keeps it.
#[derive(Debug)]
pub(crate) struct SavedJob {
    /// Its header: request and status.
    pub(crate) header: JobHeader,
    /// The devices it targets, once started.
    pub(crate) targets: Option<Vec<String>>,
    /// The results of its device operations, by record.
    pub(crate) results: Vec<SavedResult>,
}

/// What an opened store holds.
#[derive(Debug, Default)]
pub(crate) struct Saved {
    /// The wall-clock time the hub's clock counts from, if the store was used before.
    pub(crate) origin: Option<OffsetDateTime>,
    /// Every device saved, in the registry's order when it was saved.
    pub(crate) devices: Vec<SavedDevice>,
    /// Every job saved, in slot order.
    pub(crate) jobs: Vec<SavedJob>,
}

/// An open store, not yet written to.
pub struct Store {
    conn: rusqlite::Connection,
    path: PathBuf,
    saved: Saved,
    /// Rows in the device log.
    logged: u64,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Store({})", self.path.display())
    }
}

impl Store {
    /// Opens (or creates) the store in state directory `dir` and reads what it holds.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        let path = dir.join(STORE_FILE);
        let conn = schema::open(&path)?;
        let saved = codec::load(&conn, &path)?;
        let logged = schema::logged(&conn, &path)?;
        Ok(Store {
            conn,
            path,
            saved,
            logged,
        })
    }

    /// The wall-clock time the hub's clock counted from when it last ran, if it did.
    pub fn origin(&self) -> Option<OffsetDateTime> {
        self.saved.origin
    }

    /// How many devices (deleted ones too) and jobs the store holds.
    pub fn held(&self) -> (usize, usize) {
        (self.saved.devices.len(), self.saved.jobs.len())
    }

    /// The ids of the jobs the store holds.
    pub(crate) fn job_ids(&self) -> impl Iterator<Item = &str> {
        self.saved
            .jobs
            .iter()
            .map(|j| j.header.request.job_id.as_str())
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Starts the writer thread, saving `origin` as the clock's zero if the store is new;
    /// answers the journal the engine writes through and what the store held.
    pub(crate) fn start(self, origin: OffsetDateTime) -> Result<(Journal, Saved), StoreError> {
        let Store {
            conn,
            path,
            mut saved,
            logged,
        } = self;
        if saved.origin.is_none() {
            schema::save_origin(&conn, &path, origin)?;
            saved.origin = Some(origin);
        }
        let (tx, rx) = mpsc::channel::<ToWriter>();
        let (progress_tx, progress) = watch::channel(Progress::default());
        let file = path.clone();
        let thread = std::thread::Builder::new()
            .name(WRITER_THREAD.into())
            .spawn(move || writer::run(conn, path, rx, progress_tx))
            .map_err(|e| StoreError::Foreign {
                path: file.clone(),
                what: format!("cannot start the store's writer thread: {e}"),
                hint: "the system is out of threads: stop some processes and start the hub again",
            })?;
        Ok((
            Journal {
                changes: Vec::new(),
                replies: Vec::new(),
                sent: 0,
                waiting: VecDeque::new(),
                logged,
                log_cap: LOG_CAP,
                to_writer: tx,
                writer: Some(thread),
                progress,
                path: file,
            },
            saved,
        ))
    }
}

/// A device's row: its twin and status at registry position `seq`.
#[derive(Debug)]
pub(crate) struct DeviceRow {
    /// The device id.
    pub(crate) id: Arc<str>,
    /// Its registry position.
    pub(crate) seq: u64,
    /// Its twin.
    pub(crate) twin: Twin,
    /// Its status.
    pub(crate) enabled: bool,
}

/// One change to save.
#[derive(Debug)]
pub(crate) enum Change {
    /// A device added or changed.
    Device(DeviceRow),
    /// A device deleted.
    Removed(Arc<str>),
    /// A job created, started or ended.
    Job(Box<JobHeader>),
    /// The devices a job targets (when it starts).
    Targets(u32, Vec<Arc<str>>),
    /// A device operation of job `slot` ended.
    Result(u32, SavedResult),
}

/// An answer held back until the batch it belongs to has committed; it is told whether it did.
pub(crate) type Deferred = Box<dyn FnOnce(Result<(), HubError>) + Send>;

/// One engine turn's changes, numbered in the order they were handed over.
struct Batch {
    seq: u64,
    changes: Vec<Change>,
}

/// How far the writer has got.
#[derive(Debug, Clone, Default)]
struct Progress {
    /// The last batch committed.
    committed: u64,
    /// The failed commit, once there is one: nothing after `committed` is saved.
    failed: Option<CommitFailed>,
}

/// What the engine asks of the writer thread, in order.
enum ToWriter {
    /// Save a turn's changes.
    Save(Batch),
    /// Commit what came before, then read the whole store back.
    Load(mpsc::Sender<Result<Saved, StoreError>>),
    /// Every live device: replace the device table with them and empty the device log.
    Snapshot(Vec<DeviceRow>),
}

/// The engine's end of the store: collects a turn's changes and hands them to the writer, and
/// holds the answers that wait for them until the writer has committed them.
///
/// The answers stay with the engine, which releases them ([`Journal::release`]) when the
/// writer reports a commit: one wake of the engine per commit, rather than one wake of each
/// request's task from the writer's thread (measured: 15 µs more of the runtime's CPU per
/// twin PATCH that way).
pub(crate) struct Journal {
    /// This turn's changes.
    changes: Vec<Change>,
    /// This turn's held answers.
    replies: Vec<Deferred>,
    /// The number of the last batch handed over.
    sent: u64,
    /// Held answers by batch, oldest first.
    waiting: VecDeque<(u64, Vec<Deferred>)>,
    /// Rows in the device log (device changes since the last snapshot).
    logged: u64,
    /// The log size below which no snapshot is due ([`LOG_CAP`]).
    log_cap: u64,
    to_writer: mpsc::Sender<ToWriter>,
    writer: Option<JoinHandle<()>>,
    progress: watch::Receiver<Progress>,
    /// The database file.
    path: PathBuf,
}

impl Journal {
    /// Notes a change.
    pub(crate) fn push(&mut self, change: Change) {
        if matches!(change, Change::Device(_) | Change::Removed(_)) {
            self.logged += 1;
        }
        self.changes.push(change);
    }

    /// Whether the device log has grown past the size that calls for a snapshot of the
    /// registry's `devices` live devices: more rows than devices, and than [`LOG_CAP`].
    pub(crate) fn wants_snapshot(&self, devices: usize) -> bool {
        self.logged > self.log_cap.max(devices as u64)
    }

    /// Hands over this turn's changes, then `devices`, every live device as it stands after
    /// them: the writer replaces the device table with them and empties the device log.
    pub(crate) fn snapshot(&mut self, devices: Vec<DeviceRow>) {
        self.flush();
        self.logged = 0;
        let _ = self.to_writer.send(ToWriter::Snapshot(devices));
    }

    /// Holds `reply` back until this turn's changes have committed.
    pub(crate) fn defer(&mut self, reply: Deferred) {
        self.replies.push(reply);
    }

    /// Hands this turn's changes to the writer, and files its held answers.
    pub(crate) fn flush(&mut self) {
        if self.changes.is_empty() && self.replies.is_empty() {
            return;
        }
        self.sent += 1;
        let replies = std::mem::take(&mut self.replies);
        if !replies.is_empty() {
            self.waiting.push_back((self.sent, replies));
        }
        let batch = Batch {
            seq: self.sent,
            changes: std::mem::take(&mut self.changes),
        };
        // A writer that is gone has dropped its progress: `release` answers what waits.
        let _ = self.to_writer.send(ToWriter::Save(batch));
    }

    /// Hands over this turn's changes, waits until the writer has committed everything handed
    /// over, and reads the store back: the state a hub restarting now would start from. It
    /// blocks the calling thread for a commit and a read of the whole store.
    pub(crate) fn reload(&mut self) -> Result<Saved, StoreError> {
        self.flush();
        let (tx, rx) = mpsc::channel();
        let gone = || StoreError::Foreign {
            path: self.path.clone(),
            what: "the store's writer thread has stopped".into(),
            hint: "start the hub again",
        };
        self.to_writer
            .send(ToWriter::Load(tx))
            .map_err(|_| gone())?;
        rx.recv().map_err(|_| gone())?
    }

    /// Resolves once the writer has committed more, failed, or died (cancel-safe): then call
    /// [`Journal::release`].
    pub(crate) async fn progressed(&mut self) {
        let _ = self.progress.changed().await;
    }

    /// Answers the held writes the writer has committed. Once a commit has failed or the
    /// writer has died, answers every other held write with the error and returns the failure.
    pub(crate) fn release(&mut self) -> Option<CommitFailed> {
        // The writer ends only when the journal closes: before that, gone means it panicked.
        let died = self.progress.has_changed().is_err();
        self.answer(died)
    }

    /// Answers the held writes committed and, after a failure (or a writer that `died`), the
    /// rest with the error; returns the failure.
    fn answer(&mut self, died: bool) -> Option<CommitFailed> {
        let (committed, failed) = {
            let progress = self.progress.borrow_and_update();
            (progress.committed, progress.failed.clone())
        };
        while self
            .waiting
            .front()
            .is_some_and(|(seq, _)| *seq <= committed)
        {
            if let Some((_, replies)) = self.waiting.pop_front() {
                for reply in replies {
                    reply(Ok(()));
                }
            }
        }
        let failure = failed.or_else(|| died.then(|| CommitFailed::writer_died(&self.path)))?;
        let lost = writer::lost(&failure.cause);
        for (_, replies) in self.waiting.drain(..) {
            for reply in replies {
                reply(Err(lost.clone()));
            }
        }
        Some(failure)
    }

    /// Hands over what is left, waits until the writer has committed it and answers every
    /// held write; answers the failed commit if one failed.
    pub(crate) fn close(mut self) -> Result<(), CommitFailed> {
        self.flush();
        drop(std::mem::replace(&mut self.to_writer, mpsc::channel().0));
        let died = self
            .writer
            .take()
            .is_some_and(|thread| thread.join().is_err());
        self.answer(died).map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, seq: u64) -> DeviceRow {
        DeviceRow {
            id: id.into(),
            seq,
            twin: Twin::new(Default::default(), Default::default(), Default::default()),
            enabled: true,
        }
    }

    #[test]
    fn a_snapshot_follows_the_turn_before_it_and_empties_the_log() {
        let dir = schema::tests::dir("journal");
        let (mut journal, _) = Store::open(&dir)
            .unwrap()
            .start(OffsetDateTime::UNIX_EPOCH)
            .unwrap();
        journal.log_cap = 3;
        for (i, id) in ["a", "b", "c"].into_iter().enumerate() {
            journal.push(Change::Device(row(id, i as u64)));
        }
        journal.flush();
        assert!(!journal.wants_snapshot(2));
        journal.push(Change::Removed("b".into()));
        assert!(journal.wants_snapshot(2) && !journal.wants_snapshot(4));
        journal.push(Change::Device(row("d", 3)));
        // The snapshot comes after this turn's changes, which are in it already.
        journal.snapshot(vec![row("a", 0), row("c", 2), row("d", 3)]);
        assert!(!journal.wants_snapshot(0));
        journal.close().unwrap();

        let store = Store::open(&dir).unwrap();
        assert_eq!(store.logged, 0);
        let held: Vec<(&str, bool)> = store
            .saved
            .devices
            .iter()
            .map(|d| (d.id.as_str(), d.twin.is_some()))
            .collect();
        assert_eq!(held, [("a", true), ("b", false), ("c", true), ("d", true)]);
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
