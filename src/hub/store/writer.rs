//! The store's writer thread: takes every batch the engine handed over since its last commit,
//! writes them in one transaction, commits (group commit: one log write for all of them), then
//! releases the answers they held back, telling each whether its write is saved.
//!
//! A commit that fails is the store's last: the hub's memory is then ahead of its file, and a
//! later commit would save a state that skips the lost changes. The writer answers the writes
//! of the failed group and of every later batch with the error, never writes again, and
//! reports the failure to the engine, which stops.

use std::path::PathBuf;
use std::sync::mpsc;

use rusqlite::{params, Connection};
use tokio::sync::watch;

use crate::hub::error::{ErrorCode, HubError};

use super::codec::{encode_result, encode_twin, load};
use super::{Batch, Change, CommitFailed, Saved, StoreError, ToWriter};

/// The answer to a write the store could not save, `why`.
pub(super) fn lost(why: &str) -> HubError {
    HubError::new(
        ErrorCode::ServerError,
        format!("the hub could not save this change to its store ({why}); it is not saved, and the hub stops"),
    )
}

/// Runs until the engine's end of the channel closes; reports the first failed commit through
/// `failure`.
pub(super) fn run(
    conn: Connection,
    path: PathBuf,
    asks: mpsc::Receiver<ToWriter>,
    failure: watch::Sender<Option<CommitFailed>>,
) {
    let mut writer = Writer {
        conn,
        path,
        failure,
        failed: None,
        group: Vec::new(),
    };
    while let Ok(first) = asks.recv() {
        // Every batch waiting goes into one commit; a load reads after the batches before it.
        for ask in std::iter::once(first).chain(asks.try_iter()) {
            match ask {
                ToWriter::Save(batch) => writer.group.push(batch),
                ToWriter::Load(reply) => {
                    writer.commit();
                    let _ = reply.send(writer.load());
                }
            }
        }
        writer.commit();
    }
}

/// The writer thread's state.
struct Writer {
    conn: Connection,
    path: PathBuf,
    failure: watch::Sender<Option<CommitFailed>>,
    /// The answer to every write once a commit failed.
    failed: Option<HubError>,
    /// The batches of the next commit.
    group: Vec<Batch>,
}

impl Writer {
    /// Writes the group in one transaction (unless a commit failed before) and releases its
    /// answers, telling each whether its write is saved.
    fn commit(&mut self) {
        if self.group.is_empty() {
            return;
        }
        if self.failed.is_none() {
            if let Err(e) = write(&mut self.conn, &self.group) {
                let os = os_error(&self.conn, &e);
                let e = CommitFailed::new(&self.path, e, os);
                self.failed = Some(lost(&e.cause));
                self.failure.send_replace(Some(e));
            }
        }
        let saved = self.failed.clone().map_or(Ok(()), Err);
        for batch in self.group.drain(..) {
            for reply in batch.replies {
                reply(saved.clone());
            }
        }
    }

    /// Everything the store holds, unless a commit failed (it then holds less than the hub).
    fn load(&self) -> Result<Saved, StoreError> {
        match &self.failed {
            Some(e) => Err(StoreError::Foreign {
                path: self.path.clone(),
                what: format!("it holds less than the hub: {e}"),
                hint: "start the hub again: it resumes from what was committed",
            }),
            None => load(&self.conn, &self.path),
        }
    }
}

/// The system's error behind SQLite's I/O error `e`, if it is one.
fn os_error(conn: &Connection, e: &rusqlite::Error) -> Option<std::io::Error> {
    if e.sqlite_error_code() != Some(rusqlite::ErrorCode::SystemIoFailure) {
        return None;
    }
    // SAFETY: the handle is this open connection's, used on its own thread;
    // sqlite3_system_errno only reads the errno SQLite saved with the connection's last
    // I/O error.
    let errno = unsafe { rusqlite::ffi::sqlite3_system_errno(conn.handle()) };
    (errno != 0).then(|| std::io::Error::from_raw_os_error(errno))
}

/// Writes `group` in one transaction.
fn write(conn: &mut Connection, group: &[Batch]) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    {
        let mut device = tx
            .prepare_cached("INSERT OR REPLACE INTO devices (id, seq, twin) VALUES (?1, ?2, ?3)")?;
        let mut removed = tx.prepare_cached(
            "INSERT INTO devices (id, seq, twin) VALUES (?1, 0, NULL) \
                 ON CONFLICT (id) DO UPDATE SET twin = NULL",
        )?;
        let mut job =
            tx.prepare_cached("INSERT OR REPLACE INTO jobs (slot, header) VALUES (?1, ?2)")?;
        let mut targets =
            tx.prepare_cached("INSERT OR REPLACE INTO targets (slot, devices) VALUES (?1, ?2)")?;
        let mut result = tx.prepare_cached(
            "INSERT OR REPLACE INTO results (slot, record, result) VALUES (?1, ?2, ?3)",
        )?;
        for change in group.iter().flat_map(|b| &b.changes) {
            match change {
                Change::Device {
                    id,
                    seq,
                    twin,
                    enabled,
                } => device.execute(params![&**id, *seq as i64, encode_twin(twin, *enabled)]),
                Change::Removed(id) => removed.execute([&**id]),
                Change::Job(header) => job.execute(params![header.slot, header.encode()]),
                Change::Targets(slot, ids) => {
                    let ids: Vec<&str> = ids.iter().map(|id| &**id).collect();
                    let text = serde_json::to_string(&ids).unwrap_or_default();
                    targets.execute(params![slot, text])
                }
                Change::Result(slot, r) => {
                    result.execute(params![slot, r.record, encode_result(r)])
                }
            }?;
        }
    }
    tx.commit()
}
