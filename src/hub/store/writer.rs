//! The store's writer thread: takes every batch the engine handed over since its last commit,
//! writes them in one transaction, commits (group commit: one log write for all of them), then
//! tells the engine how far it has got, so that the engine releases the answers they held
//! back.
//!
//! A device change (a twin patch) is appended to `device_log`, not written over the device's
//! row in `devices`: an append fills the last page of the log, where an update in place
//! dirties a page at a random place in the table (each written whole to SQLite's log, then to
//! the file), and when a row grows, SQLite's rebalancing of the table makes that commit scan
//! its whole page cache (measured: 14% of a storing hub's samples under PATCH load). The writer
//! folds the log into `devices` (oldest rows first, [`FOLD_ROWS`] per transaction) whenever no
//! batch has come for [`IDLE`], and after every commit once the log holds more than
//! [`LOG_CAP`] rows, so that a sustained load cannot grow it without end. Reading the store
//! applies what is left of the log to the table.
//!
//! A commit that fails is the store's last: the hub's memory is then ahead of its file, and a
//! later commit would save a state that skips the lost changes. The writer never writes again
//! and reports the failure to the engine, which answers the writes of the failed group and of
//! every later batch with the error, and stops.

use std::path::PathBuf;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

use rusqlite::{params, Connection};
use tokio::sync::watch;

use crate::hub::error::{ErrorCode, HubError};

use super::codec::{encode_result, encode_twin, load};
use super::{Batch, Change, CommitFailed, Progress, Saved, StoreError, ToWriter};

/// The answer to a write the store could not save, `why`.
pub(super) fn lost(why: &str) -> HubError {
    HubError::new(
        ErrorCode::ServerError,
        format!("the hub could not save this change to its store ({why}); it is not saved, and the hub stops"),
    )
}

/// How long the writer waits for a batch before it folds the device log.
const IDLE: Duration = Duration::from_millis(100);
/// Log rows folded per transaction: a fold holds the next commit back by about this many
/// device row writes (some 50 ms on the development machine).
const FOLD_ROWS: i64 = 2_048;
/// Beyond this many rows in the log, the writer folds after each commit, load or not.
const LOG_CAP: u64 = 262_144;

/// Runs until the engine's end of the channel closes; reports each commit, and the first
/// failed one, through `progress`.
pub(super) fn run(
    conn: Connection,
    path: PathBuf,
    asks: mpsc::Receiver<ToWriter>,
    progress: watch::Sender<Progress>,
) {
    // If the log cannot be counted, idle folding finds out how long it is.
    let logged = conn
        .query_row("SELECT count(*) FROM device_log", [], |r| {
            r.get::<_, i64>(0)
        })
        .map_or(1, |n| n.unsigned_abs());
    let mut writer = Writer {
        conn,
        path,
        progress,
        failed: false,
        group: Vec::new(),
        logged,
    };
    while let Some(first) = writer.next(&asks) {
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
        if writer.logged > LOG_CAP {
            writer.fold();
        }
    }
}

/// The writer thread's state.
struct Writer {
    conn: Connection,
    path: PathBuf,
    progress: watch::Sender<Progress>,
    /// Whether a commit failed.
    failed: bool,
    /// The batches of the next commit.
    group: Vec<Batch>,
    /// How many rows the device log holds.
    logged: u64,
}

impl Writer {
    /// The next ask, or None once the engine's end has closed; while none comes and the
    /// device log is not empty, folds it.
    fn next(&mut self, asks: &mpsc::Receiver<ToWriter>) -> Option<ToWriter> {
        let mut wait = IDLE;
        loop {
            if self.logged == 0 || self.failed {
                return asks.recv().ok();
            }
            match asks.recv_timeout(wait) {
                Ok(ask) => return Some(ask),
                Err(RecvTimeoutError::Disconnected) => return None,
                Err(RecvTimeoutError::Timeout) => {
                    self.fold();
                    wait = Duration::ZERO;
                }
            }
        }
    }

    /// Folds the oldest rows of the device log into the device table.
    fn fold(&mut self) {
        match fold(&mut self.conn, FOLD_ROWS) {
            Ok(0) => self.logged = 0,
            Ok(folded) => self.logged = self.logged.saturating_sub(folded),
            Err(e) => self.fail(e),
        }
    }

    /// Notes that the store could not write: it never writes again, and the engine is told.
    fn fail(&mut self, e: rusqlite::Error) {
        let os = os_error(&self.conn, &e);
        let e = CommitFailed::new(&self.path, e, os);
        self.failed = true;
        self.progress.send_modify(|p| p.failed = Some(e));
    }

    /// Writes the group in one transaction (unless a commit failed before) and tells the
    /// engine.
    fn commit(&mut self) {
        let Some(last) = self.group.last().map(|b| b.seq) else {
            return;
        };
        if !self.failed {
            match write(&mut self.conn, &self.group) {
                Ok(logged) => {
                    self.logged += logged;
                    self.progress.send_modify(|p| p.committed = last);
                }
                Err(e) => self.fail(e),
            }
        }
        self.group.clear();
    }

    /// Everything the store holds, unless a commit failed (it then holds less than the hub).
    fn load(&self) -> Result<Saved, StoreError> {
        if self.failed {
            return Err(StoreError::Foreign {
                path: self.path.clone(),
                what: "it holds less than the hub: a commit failed".into(),
                hint: "start the hub again: it resumes from what was committed",
            });
        }
        load(&self.conn, &self.path)
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

/// Writes `group` in one transaction; answers how many rows it added to the device log.
fn write(conn: &mut Connection, group: &[Batch]) -> rusqlite::Result<u64> {
    let tx = conn.transaction()?;
    let mut logged = 0;
    {
        let mut device =
            tx.prepare_cached("INSERT INTO device_log (id, seq, twin) VALUES (?1, ?2, ?3)")?;
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
                } => {
                    logged += 1;
                    device.execute(params![&**id, *seq as i64, encode_twin(twin, *enabled)])
                }
                Change::Removed(id) => {
                    logged += 1;
                    device.execute(params![&**id, 0, None::<String>])
                }
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
    tx.commit()?;
    Ok(logged)
}

/// Folds the oldest `rows` rows of the device log into the device table in one transaction,
/// in log order (a later change wins; a deletion keeps the device's registry position);
/// answers how many it folded.
fn fold(conn: &mut Connection, rows: i64) -> rusqlite::Result<u64> {
    let tx = conn.transaction()?;
    let last: Option<i64> = tx
        .prepare_cached("SELECT max(n) FROM (SELECT n FROM device_log ORDER BY n LIMIT ?1)")?
        .query_row([rows], |r| r.get(0))?;
    let Some(last) = last else {
        return Ok(0);
    };
    tx.prepare_cached(
        "INSERT INTO devices (id, seq, twin) \
         SELECT id, seq, twin FROM device_log WHERE n <= ?1 ORDER BY n \
         ON CONFLICT (id) DO UPDATE SET twin = excluded.twin, \
         seq = CASE WHEN excluded.twin IS NULL THEN devices.seq ELSE excluded.seq END",
    )?
    .execute([last])?;
    let folded = tx
        .prepare_cached("DELETE FROM device_log WHERE n <= ?1")?
        .execute([last])?;
    tx.commit()?;
    Ok(folded as u64)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::{json, Map, Value};

    use super::*;
    use crate::hub::store::schema;
    use crate::hub::twin::Twin;

    fn device(id: &str, seq: u64, v: i64) -> Change {
        let tags = match json!({ "v": v }) {
            Value::Object(tags) => tags,
            _ => unreachable!(),
        };
        Change::Device {
            id: id.into(),
            seq,
            twin: Twin::new(Arc::new(tags), Arc::new(Map::new()), Arc::new(Map::new())),
            enabled: true,
        }
    }

    /// The devices read back: id and tag `v`, or None for a deleted one, in registry order.
    fn devices(conn: &Connection, path: &std::path::Path) -> Vec<(String, Option<Value>)> {
        load(conn, path)
            .unwrap()
            .devices
            .into_iter()
            .map(|d| (d.id, d.twin.map(|(t, _)| t.tags["v"].clone())))
            .collect()
    }

    #[test]
    fn device_changes_read_back_the_same_before_during_and_after_folding() {
        let d = schema::tests::dir("fold");
        let path = d.join("hub.db");
        let mut conn = schema::open(&path).unwrap();
        let first = Batch {
            seq: 1,
            changes: vec![device("a", 1, 1), device("b", 2, 1), device("c", 3, 1)],
        };
        assert_eq!(write(&mut conn, &[first]).unwrap(), 3);
        // Fold the first three, so that the next changes meet rows in the table.
        assert_eq!(fold(&mut conn, 100).unwrap(), 3);
        let second = Batch {
            seq: 2,
            changes: vec![
                device("a", 1, 2),
                Change::Removed("b".into()),
                device("c", 5, 2),
                device("d", 4, 1),
                Change::Removed("never".into()),
                device("a", 1, 3),
            ],
        };
        assert_eq!(write(&mut conn, &[second]).unwrap(), 6);
        // a patched twice (the last wins), b deleted where it was, c moved after d.
        let expected = vec![
            ("never".to_owned(), None),
            ("a".to_owned(), Some(json!(3))),
            ("b".to_owned(), None),
            ("d".to_owned(), Some(json!(1))),
            ("c".to_owned(), Some(json!(2))),
        ];
        assert_eq!(devices(&conn, &path), expected);
        assert_eq!(fold(&mut conn, 2).unwrap(), 2);
        assert_eq!(devices(&conn, &path), expected);
        assert_eq!(fold(&mut conn, 100).unwrap(), 4);
        assert_eq!(fold(&mut conn, 100).unwrap(), 0);
        assert_eq!(devices(&conn, &path), expected);
        let logged: i64 = conn
            .query_row("SELECT count(*) FROM device_log", [], |r| r.get(0))
            .unwrap();
        assert_eq!(logged, 0);
        drop(conn);
        let _ = std::fs::remove_dir_all(&d);
    }
}
