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

use super::codec::{encode_result, encode_twin};
use super::{Batch, Change, CommitFailed};

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
    mut conn: Connection,
    path: PathBuf,
    batches: mpsc::Receiver<Batch>,
    failure: watch::Sender<Option<CommitFailed>>,
) {
    let mut group = Vec::new();
    let mut failed: Option<HubError> = None;
    while let Ok(first) = batches.recv() {
        group.push(first);
        group.extend(batches.try_iter());
        if failed.is_none() {
            if let Err(e) = write(&mut conn, &group) {
                let os = os_error(&conn, &e);
                let e = CommitFailed::new(&path, e, os);
                failed = Some(lost(&e.cause));
                failure.send_replace(Some(e));
            }
        }
        let saved = failed.clone().map_or(Ok(()), Err);
        for batch in group.drain(..) {
            for reply in batch.replies {
                reply(saved.clone());
            }
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
