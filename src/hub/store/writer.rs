//! The store's writer thread: takes every batch the engine handed over since its last commit,
//! writes them in one transaction, commits (group commit: one log write for all of them), then
//! tells the engine how far it has got, so that the engine releases the answers they held
//! back.
//!
//! A device change (a twin patch) is appended to `device_log`, not written over the device's
//! row in `devices`: an append fills the last page of the log, where an update in place
//! dirties a page at a random place in the table (each written whole to SQLite's log, then to
//! the file), and when a row grows, SQLite's rebalancing of the table makes that commit scan
//! its whole page cache (measured: 14% of a storing hub's samples under PATCH load). Once the
//! log outgrows the registry, the engine hands over a snapshot of every live device; the writer
//! replaces the table's live rows with it, written in id order, and empties the log, in one
//! transaction. Reading the store applies the log to the table.
//!
//! A commit that fails is the store's last: the hub's memory is then ahead of its file, and a
//! later commit would save a state that skips the lost changes. The writer never writes again
//! and reports the failure to the engine, which answers the writes of the failed group and of
//! every later batch with the error, and stops.

use std::path::PathBuf;
use std::sync::mpsc;

use rusqlite::{params, Connection};
use tokio::sync::watch;

use crate::hub::error::{ErrorCode, HubError};

use super::codec::{encode_result, encode_twin, load};
use super::{Batch, Change, CommitFailed, DeviceRow, Progress, Saved, StoreError, ToWriter};

/// The answer to a write the store could not save, `why`.
pub(super) fn lost(why: &str) -> HubError {
    HubError::new(
        ErrorCode::ServerError,
        format!("the hub could not save this change to its store ({why}); it is not saved, and the hub stops"),
    )
}

/// Runs until the engine's end of the channel closes; reports each commit, and the first
/// failed one, through `progress`.
pub(super) fn run(
    conn: Connection,
    path: PathBuf,
    asks: mpsc::Receiver<ToWriter>,
    progress: watch::Sender<Progress>,
) {
    let mut writer = Writer {
        conn,
        path,
        progress,
        failed: false,
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
                ToWriter::Snapshot(mut devices) => {
                    writer.commit();
                    if !writer.failed {
                        devices.sort_unstable_by(|a, b| a.id.cmp(&b.id));
                        if let Err(e) = snapshot(&mut writer.conn, &devices) {
                            writer.fail(e);
                        }
                    }
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
    progress: watch::Sender<Progress>,
    /// Whether a commit failed.
    failed: bool,
    /// The batches of the next commit.
    group: Vec<Batch>,
}

impl Writer {
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
                Ok(()) => self.progress.send_modify(|p| p.committed = last),
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

/// Writes `group` in one transaction.
fn write(conn: &mut Connection, group: &[Batch]) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
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
                Change::Device(row) => device.execute(params![
                    &*row.id,
                    row.seq as i64,
                    encode_twin(&row.twin, row.enabled)
                ]),
                Change::Removed(id) => device.execute(params![&**id, 0, None::<String>]),
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

/// Replaces the live rows of the device table with `devices` (sorted by id) and empties the
/// device log, in one transaction. A device deleted (in the table or the log) keeps its row,
/// without a twin, unless it is live again.
fn snapshot(conn: &mut Connection, devices: &[DeviceRow]) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    tx.execute(
        "INSERT INTO devices (id, seq, twin) SELECT id, seq, NULL FROM device_log \
         WHERE twin IS NULL ON CONFLICT (id) DO UPDATE SET twin = NULL",
        [],
    )?;
    tx.execute("DELETE FROM devices WHERE twin IS NOT NULL", [])?;
    {
        let mut insert =
            tx.prepare("INSERT OR REPLACE INTO devices (id, seq, twin) VALUES (?1, ?2, ?3)")?;
        for row in devices {
            insert.execute(params![
                &*row.id,
                row.seq as i64,
                encode_twin(&row.twin, row.enabled)
            ])?;
        }
    }
    tx.execute("DELETE FROM device_log", [])?;
    tx.commit()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::{json, Map, Value};

    use super::*;
    use crate::hub::store::schema;
    use crate::hub::twin::Twin;

    fn row(id: &str, seq: u64, v: i64) -> DeviceRow {
        let tags = match json!({ "v": v }) {
            Value::Object(tags) => tags,
            _ => unreachable!(),
        };
        DeviceRow {
            id: id.into(),
            seq,
            twin: Twin::new(Arc::new(tags), Arc::new(Map::new()), Arc::new(Map::new())),
            enabled: true,
        }
    }

    fn batch(seq: u64, changes: Vec<Change>) -> Batch {
        Batch { seq, changes }
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

    fn logged(conn: &Connection) -> i64 {
        conn.query_row("SELECT count(*) FROM device_log", [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn device_changes_read_back_the_same_from_the_log_and_from_a_snapshot() {
        let d = schema::tests::dir("snapshot");
        let path = d.join("hub.db");
        let mut conn = schema::open(&path).unwrap();
        let first = vec![row("a", 1, 1), row("b", 2, 1), row("c", 3, 1)];
        write(
            &mut conn,
            &[batch(1, first.into_iter().map(Change::Device).collect())],
        )
        .unwrap();
        snapshot(&mut conn, &[row("a", 1, 1), row("b", 2, 1), row("c", 3, 1)]).unwrap();
        assert_eq!(logged(&conn), 0);
        let second = vec![
            Change::Device(row("a", 1, 2)),
            Change::Removed("b".into()),
            Change::Device(row("c", 5, 2)),
            Change::Device(row("d", 4, 1)),
            Change::Removed("never".into()),
            Change::Device(row("a", 1, 3)),
        ];
        write(&mut conn, &[batch(2, second)]).unwrap();
        // a patched twice (the last wins), b deleted where it was, c moved after d.
        let expected = vec![
            ("never".to_owned(), None),
            ("a".to_owned(), Some(json!(3))),
            ("b".to_owned(), None),
            ("d".to_owned(), Some(json!(1))),
            ("c".to_owned(), Some(json!(2))),
        ];
        assert_eq!(devices(&conn, &path), expected);
        // The engine's live devices, sorted by id as the writer sorts them.
        snapshot(&mut conn, &[row("a", 1, 3), row("c", 5, 2), row("d", 4, 1)]).unwrap();
        assert_eq!(logged(&conn), 0);
        assert_eq!(devices(&conn, &path), expected);
        // A deleted device created again is live in the next snapshot.
        write(&mut conn, &[batch(3, vec![Change::Device(row("b", 6, 9))])]).unwrap();
        let live = [
            row("a", 1, 3),
            row("b", 6, 9),
            row("c", 5, 2),
            row("d", 4, 1),
        ];
        snapshot(&mut conn, &live).unwrap();
        assert_eq!(
            devices(&conn, &path),
            vec![
                ("never".to_owned(), None),
                ("a".to_owned(), Some(json!(3))),
                ("d".to_owned(), Some(json!(1))),
                ("c".to_owned(), Some(json!(2))),
                ("b".to_owned(), Some(json!(9))),
            ]
        );
        drop(conn);
        let _ = std::fs::remove_dir_all(&d);
    }
}
