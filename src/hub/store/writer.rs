//! The store's writer thread: takes every batch the engine handed over since its last commit,
//! writes them in one transaction, commits (group commit: one log write for all of them), then
//! releases the answers they held back, telling each whether its write is saved.

use std::path::{Path, PathBuf};
use std::sync::mpsc;

use rusqlite::{params, Connection};

use crate::hub::error::{ErrorCode, HubError};

use super::codec::{encode_result, encode_twin, load};
use super::schema::failed;
use super::{Batch, Change, StoreError, ToWriter};

/// The answer to a write the store could not save.
pub(super) fn lost() -> HubError {
    HubError::new(
        ErrorCode::ServerError,
        "the hub could not save this change to its store; it may be lost on restart",
    )
}

/// Runs until the engine's end of the channel closes.
pub(super) fn run(mut conn: Connection, path: PathBuf, asks: mpsc::Receiver<ToWriter>) {
    let mut group = Vec::new();
    while let Ok(first) = asks.recv() {
        // Every batch waiting goes into one commit; a load reads after the batches before it.
        for ask in std::iter::once(first).chain(asks.try_iter()) {
            match ask {
                ToWriter::Save(batch) => group.push(batch),
                ToWriter::Load(reply) => {
                    commit(&mut conn, &path, &mut group);
                    let _ = reply.send(load(&conn, &path));
                }
            }
        }
        commit(&mut conn, &path, &mut group);
    }
}

/// Writes `group` in one transaction and releases its answers, telling each whether it saved.
fn commit(conn: &mut Connection, path: &Path, group: &mut Vec<Batch>) {
    if group.is_empty() {
        return;
    }
    let saved = write(conn, path, group).map_err(|e| {
        HubError::new(
            ErrorCode::ServerError,
            format!("the hub could not save this change to its store: {e}"),
        )
    });
    for batch in group.drain(..) {
        for reply in batch.replies {
            reply(saved.clone());
        }
    }
}

/// Writes `group` in one transaction.
fn write(conn: &mut Connection, path: &Path, group: &[Batch]) -> Result<(), StoreError> {
    let sql = |e| failed(path, e);
    let tx = conn.transaction().map_err(sql)?;
    {
        let mut device = tx
            .prepare_cached("INSERT OR REPLACE INTO devices (id, seq, twin) VALUES (?1, ?2, ?3)")
            .map_err(sql)?;
        let mut removed = tx
            .prepare_cached(
                "INSERT INTO devices (id, seq, twin) VALUES (?1, 0, NULL) \
                 ON CONFLICT (id) DO UPDATE SET twin = NULL",
            )
            .map_err(sql)?;
        let mut job = tx
            .prepare_cached("INSERT OR REPLACE INTO jobs (slot, header) VALUES (?1, ?2)")
            .map_err(sql)?;
        let mut targets = tx
            .prepare_cached("INSERT OR REPLACE INTO targets (slot, devices) VALUES (?1, ?2)")
            .map_err(sql)?;
        let mut result = tx
            .prepare_cached(
                "INSERT OR REPLACE INTO results (slot, record, result) VALUES (?1, ?2, ?3)",
            )
            .map_err(sql)?;
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
            }
            .map_err(sql)?;
        }
    }
    tx.commit().map_err(sql)
}
