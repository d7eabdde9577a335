//! The store's database: opening it in WAL mode, creating its tables, and refusing a file that
//! is not a fleetsim store or was written by a newer one.

use std::path::Path;

use rusqlite::{Connection, OpenFlags};
use time::OffsetDateTime;

use super::StoreError;

/// `PRAGMA application_id` of a fleetsim store: "flst".
const APPLICATION_ID: i32 = 0x666c_7374;
/// The layout this fleetsim writes (`PRAGMA user_version`). Layout 1 had no `device_log`;
/// opening it adds the table.
pub(super) const VERSION: i32 = 2;

/// What to do about a file fleetsim cannot use.
const MOVE_AWAY: &str = "move it away (or choose another --state-dir) to start with an empty hub";

const TABLES: &str = "
CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE devices (id TEXT PRIMARY KEY, seq INTEGER NOT NULL, twin TEXT) WITHOUT ROWID;
CREATE TABLE jobs (slot INTEGER PRIMARY KEY, header TEXT NOT NULL);
CREATE TABLE targets (slot INTEGER PRIMARY KEY, devices TEXT NOT NULL);
CREATE TABLE results (
    slot INTEGER NOT NULL, record INTEGER NOT NULL, result TEXT NOT NULL,
    PRIMARY KEY (slot, record)
) WITHOUT ROWID;
";

/// The log of device changes not yet folded into `devices` (added by layout 2).
const DEVICE_LOG: &str =
    "CREATE TABLE device_log (n INTEGER PRIMARY KEY, id TEXT NOT NULL, seq INTEGER NOT NULL, twin TEXT)";

/// What to do about a full disk.
pub(super) const DISK_FULL: &str = "the disk is full: free some space";

/// The error for `source` on the store at `path`.
pub(super) fn failed(path: &Path, source: rusqlite::Error) -> StoreError {
    StoreError::Database {
        path: path.to_owned(),
        hint: hint(&source),
        cause: source,
    }
}

/// What the user can do about `source`.
pub(super) fn hint(source: &rusqlite::Error) -> &'static str {
    match source.sqlite_error_code() {
        Some(rusqlite::ErrorCode::NotADatabase) => MOVE_AWAY,
        Some(rusqlite::ErrorCode::DatabaseCorrupt) => MOVE_AWAY,
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
            "another fleetsim hub uses this state directory: stop it, or choose another --state-dir"
        }
        Some(rusqlite::ErrorCode::DiskFull) => DISK_FULL,
        Some(rusqlite::ErrorCode::ReadOnly | rusqlite::ErrorCode::CannotOpen) => {
            "check the directory's permissions"
        }
        _ => "check the file and the disk",
    }
}

/// Opens the store at `path`, creating its tables if it is new; refuses a foreign or newer file.
pub(super) fn open(path: &Path) -> Result<Connection, StoreError> {
    let at = |e| failed(path, e);
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(at)?;
    // A second hub on the same directory waits this long for the first one's lock, then fails.
    conn.busy_timeout(std::time::Duration::from_secs(2))
        .map_err(at)?;
    let app: i32 = conn
        .query_row("PRAGMA application_id", [], |r| r.get(0))
        .map_err(at)?;
    let version: i32 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(at)?;
    let tables: i64 = conn
        .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
        .map_err(at)?;
    if app == 0 && version == 0 && tables == 0 {
        create(&conn).map_err(at)?;
    } else if app != APPLICATION_ID {
        return Err(StoreError::Foreign {
            path: path.to_owned(),
            what: "this SQLite database is not a fleetsim hub store".into(),
            hint: MOVE_AWAY,
        });
    } else if version > VERSION {
        return Err(StoreError::Foreign {
            path: path.to_owned(),
            what: format!(
                "the store has layout {version}, written by a newer fleetsim; this one reads \
                 layout {VERSION}"
            ),
            hint: "run the newer fleetsim, or move the file away to start with an empty hub",
        });
    } else if version == 1 {
        conn.execute_batch(&format!(
            "BEGIN; {DEVICE_LOG}; PRAGMA user_version = {VERSION}; COMMIT;"
        ))
        .map_err(at)?;
    }
    // WAL: a commit is one append to the log, and readers never block the writer. NORMAL
    // syncs the log only at checkpoints: a committed transaction is in the system's file cache
    // when the commit returns, so it survives the process's death (`kill -9`, a panic) at any
    // instant; a crash of the machine itself may lose the last commits. FULL (a sync at every
    // commit) would survive that too, at a cost measured with bench/persist.sh: 3.2 times fewer
    // twin PATCHes per second on the development machine (its disk syncs in ~4 ms).
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(at)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Foreign {
            path: path.to_owned(),
            what: format!("SQLite keeps its journal in mode {mode}, not WAL"),
            hint: "put the state directory on a local file system",
        });
    }
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(at)?;
    // Checkpoints (copying the log into the file, with a sync) stall the commit that runs
    // them: fewer, larger ones (every 16,384 pages: 16 MB of log), and 64 MB of page cache.
    conn.pragma_update(None, "wal_autocheckpoint", 16_384)
        .map_err(at)?;
    conn.pragma_update(None, "cache_size", -65_536)
        .map_err(at)?;
    // One hub per store: the first write transaction takes the file's lock, and this
    // connection keeps it until the process ends (the system frees it after `kill -9` too).
    conn.pragma_update(None, "locking_mode", "EXCLUSIVE")
        .map_err(at)?;
    conn.execute_batch("BEGIN EXCLUSIVE; COMMIT;").map_err(at)?;
    Ok(conn)
}

fn create(conn: &Connection) -> rusqlite::Result<()> {
    // A twin patch rewrites one device row of a few hundred bytes, at a random place in the
    // table: each page it dirties goes to the log whole, so small pages mean less to write.
    conn.execute_batch(&format!(
        "PRAGMA page_size = 1024; BEGIN; {TABLES} {DEVICE_LOG}; \
         PRAGMA application_id = {APPLICATION_ID}; PRAGMA user_version = {VERSION}; COMMIT;"
    ))
}

/// Saves the wall-clock time the hub's clock counts from (unix microseconds).
pub(super) fn save_origin(
    conn: &Connection,
    path: &Path,
    origin: OffsetDateTime,
) -> Result<(), StoreError> {
    let us = i64::try_from(origin.unix_timestamp_nanos() / 1000).unwrap_or(i64::MAX);
    conn.execute(
        "INSERT OR REPLACE INTO meta (key, value) VALUES ('origin', ?1)",
        [us],
    )
    .map(drop)
    .map_err(|e| failed(path, e))
}

/// How many rows the device log holds.
pub(super) fn logged(conn: &Connection, path: &Path) -> Result<u64, StoreError> {
    conn.query_row("SELECT count(*) FROM device_log", [], |r| {
        r.get::<_, i64>(0)
    })
    .map(i64::unsigned_abs)
    .map_err(|e| failed(path, e))
}

/// The saved origin, if any.
pub(super) fn origin(conn: &Connection, path: &Path) -> Result<Option<OffsetDateTime>, StoreError> {
    let us: Option<i64> = conn
        .query_row("SELECT value FROM meta WHERE key = 'origin'", [], |r| {
            r.get(0)
        })
        .map(Some)
        .or_else(|e| match e {
            rusqlite::Error::QueryReturnedNoRows => Ok(None),
            e => Err(e),
        })
        .map_err(|e| failed(path, e))?;
    us.map(|us| {
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1000).map_err(|e| {
            StoreError::Row {
                path: path.to_owned(),
                what: format!("meta.origin {us} is not a time: {e}"),
            }
        })
    })
    .transpose()
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(in crate::hub::store) fn dir(name: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("fleetsim-schema-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn refuses_garbage_foreign_and_newer_files_by_name() {
        let d = dir("bad");
        let garbage = d.join("garbage.db");
        std::fs::write(&garbage, vec![b'x'; 8192]).unwrap();
        let e = open(&garbage).unwrap_err().to_string();
        assert!(
            e.contains("garbage.db") && e.contains("move it away"),
            "{e}"
        );

        let foreign = d.join("foreign.db");
        Connection::open(&foreign)
            .unwrap()
            .execute_batch("CREATE TABLE x (a)")
            .unwrap();
        let e = open(&foreign).unwrap_err().to_string();
        assert!(
            e.contains("foreign.db") && e.contains("not a fleetsim"),
            "{e}"
        );

        let newer = d.join("newer.db");
        drop(open(&newer).unwrap());
        Connection::open(&newer)
            .unwrap()
            .pragma_update(None, "user_version", VERSION + 1)
            .unwrap();
        let e = open(&newer).unwrap_err().to_string();
        assert!(
            e.contains("newer.db") && e.contains("newer fleetsim"),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_layout_1_store_gets_the_device_log() {
        let d = dir("layout1");
        let path = d.join("old.db");
        Connection::open(&path)
            .unwrap()
            .execute_batch(&format!(
                "PRAGMA page_size = 1024; BEGIN; {TABLES} PRAGMA application_id = {APPLICATION_ID}; \
                 PRAGMA user_version = 1; COMMIT;"
            ))
            .unwrap();
        let conn = open(&path).unwrap();
        let version: i32 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        let logged: i64 = conn
            .query_row("SELECT count(*) FROM device_log", [], |r| r.get(0))
            .unwrap();
        assert_eq!((version, logged), (VERSION, 0));
        drop(conn);
        let _ = std::fs::remove_dir_all(&d);
    }
}
