//! `memory.db`: opening it (pragmas) and its schema, as an append-only list of migrations
//! keyed on `PRAGMA user_version`.

use std::path::Path;
use std::time::Duration;

use rusqlite::Connection;

use crate::error::{Error, Result};

/// How long a writer waits for another one before `SQLITE_BUSY`.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The migrations, in order: migration `i` (0-based) takes the schema from version `i` to
/// `i + 1`. Append only: never edit or reorder a released entry.
pub const MIGRATIONS: &[&str] = &[
    // 1: chunks, the two full-text indexes (kept in sync by triggers), embeddings.
    r#"
    CREATE TABLE chunks (
        id      INTEGER PRIMARY KEY,
        source  TEXT    NOT NULL,
        text    TEXT    NOT NULL,
        hash    TEXT    NOT NULL,           -- SHA-256 of text, hex
        created INTEGER NOT NULL,           -- Unix time, milliseconds
        updated INTEGER NOT NULL,
        UNIQUE (source, hash)
    );
    CREATE INDEX chunks_source ON chunks (source);
    -- Words (Latin, Cyrillic, …; diacritics folded).
    CREATE VIRTUAL TABLE chunks_fts USING fts5 (
        text, content = 'chunks', content_rowid = 'id',
        tokenize = 'unicode61 remove_diacritics 2'
    );
    -- Substrings: CJK (no spaces between words) and partial words.
    CREATE VIRTUAL TABLE chunks_tri USING fts5 (
        text, content = 'chunks', content_rowid = 'id', tokenize = 'trigram'
    );
    CREATE TRIGGER chunks_ai AFTER INSERT ON chunks BEGIN
        INSERT INTO chunks_fts (rowid, text) VALUES (new.id, new.text);
        INSERT INTO chunks_tri (rowid, text) VALUES (new.id, new.text);
    END;
    CREATE TRIGGER chunks_ad AFTER DELETE ON chunks BEGIN
        INSERT INTO chunks_fts (chunks_fts, rowid, text) VALUES ('delete', old.id, old.text);
        INSERT INTO chunks_tri (chunks_tri, rowid, text) VALUES ('delete', old.id, old.text);
    END;
    CREATE TRIGGER chunks_au AFTER UPDATE OF text ON chunks BEGIN
        INSERT INTO chunks_fts (chunks_fts, rowid, text) VALUES ('delete', old.id, old.text);
        INSERT INTO chunks_tri (chunks_tri, rowid, text) VALUES ('delete', old.id, old.text);
        INSERT INTO chunks_fts (rowid, text) VALUES (new.id, new.text);
        INSERT INTO chunks_tri (rowid, text) VALUES (new.id, new.text);
    END;
    -- One vector per chunk, little-endian f32, with the model that made it: vectors of
    -- another (provider, model, dims) are never compared with the current one's.
    CREATE TABLE embeddings (
        chunk_id INTEGER PRIMARY KEY REFERENCES chunks (id) ON DELETE CASCADE,
        provider TEXT    NOT NULL,
        model    TEXT    NOT NULL,
        dims     INTEGER NOT NULL,
        vector   BLOB    NOT NULL
    );
    CREATE INDEX embeddings_model ON embeddings (provider, model, dims);
    -- db_id: random, names this database in the process-wide vector cache (a workspace
    -- deleted and created again gets a new one); vectors_gen: bumped by every change to
    -- embeddings, so a cached matrix is known to be current with one read.
    CREATE TABLE meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID;
    INSERT INTO meta (key, value) VALUES
        ('db_id', lower(hex(randomblob(16)))), ('vectors_gen', 0);
    CREATE TRIGGER embeddings_ai AFTER INSERT ON embeddings BEGIN
        UPDATE meta SET value = value + 1 WHERE key = 'vectors_gen';
    END;
    CREATE TRIGGER embeddings_ad AFTER DELETE ON embeddings BEGIN
        UPDATE meta SET value = value + 1 WHERE key = 'vectors_gen';
    END;
    CREATE TRIGGER embeddings_au AFTER UPDATE ON embeddings BEGIN
        UPDATE meta SET value = value + 1 WHERE key = 'vectors_gen';
    END;
    "#,
    // 2: the embedding cache (memory::cache): (provider, model, dims, content hash) → vector,
    // with a last-used time (Unix ms) for LRU eviction at an entry cap.
    r#"
    CREATE TABLE embedding_cache (
        provider  TEXT    NOT NULL,
        model     TEXT    NOT NULL,
        dims      INTEGER NOT NULL,
        hash      TEXT    NOT NULL,         -- SHA-256 of the text, hex
        vector    BLOB    NOT NULL,         -- little-endian f32, as the provider returned it
        last_used INTEGER NOT NULL,
        PRIMARY KEY (provider, model, dims, hash)
    ) WITHOUT ROWID;
    CREATE INDEX embedding_cache_lru ON embedding_cache (last_used);
    "#,
    // 3: what the indexer (memory::index) saw of each source. Before this migration the
    // table was made on first use, so it may exist already. A file's identity (inode, size,
    // mtime, ctime, nanoseconds; -1: unknown, read it again) lets an unchanged note be
    // skipped without reading it.
    r#"
    CREATE TABLE IF NOT EXISTS index_state (
        source      TEXT PRIMARY KEY,
        kind        TEXT NOT NULL,          -- 'file' or 'session'
        hash        TEXT NOT NULL DEFAULT '',
        bytes       INTEGER NOT NULL DEFAULT 0,
        messages    INTEGER NOT NULL DEFAULT 0,
        updated     INTEGER NOT NULL
    ) WITHOUT ROWID;
    ALTER TABLE index_state ADD COLUMN ino      INTEGER NOT NULL DEFAULT -1;
    ALTER TABLE index_state ADD COLUMN size     INTEGER NOT NULL DEFAULT -1;
    ALTER TABLE index_state ADD COLUMN mtime_ns INTEGER NOT NULL DEFAULT -1;
    ALTER TABLE index_state ADD COLUMN ctime_ns INTEGER NOT NULL DEFAULT -1;
    "#,
];

/// The schema version this code writes and understands.
pub fn latest_version() -> i64 {
    MIGRATIONS.len() as i64
}

pub(crate) fn sql_err(path: &Path, e: rusqlite::Error) -> Error {
    Error::io(path, std::io::Error::other(format!("sqlite: {e}")))
}

/// Opens (creating if needed) the database at `path`: WAL, foreign keys on, a busy
/// timeout, then the pending migrations in one transaction. A database whose
/// `user_version` is newer than [`latest_version`] is refused (written by a newer bulkhead).
pub fn open_db(path: &Path) -> Result<Connection> {
    let conn = Connection::open(path).map_err(|e| sql_err(path, e))?;
    setup(&conn, path)?;
    Ok(conn)
}

fn setup(conn: &Connection, path: &Path) -> Result<()> {
    let e = |e| sql_err(path, e);
    conn.busy_timeout(BUSY_TIMEOUT).map_err(e)?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(e)?;
    if !mode.eq_ignore_ascii_case("wal") {
        log::warn!(target: "memory", "{}: journal mode {mode}, not WAL", path.display());
    }
    conn.execute_batch("PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL;")
        .map_err(e)?;
    migrate(conn, path)
}

fn migrate(conn: &Connection, path: &Path) -> Result<()> {
    let e = |e| sql_err(path, e);
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(e)?;
    let latest = latest_version();
    if version > latest {
        return Err(Error::Corrupt {
            path: path.to_path_buf(),
            detail: format!(
                "memory schema version {version} is newer than this bulkhead knows \
                 ({latest}); upgrade bulkhead to open it"
            ),
        });
    }
    if version < 0 {
        return Err(Error::Corrupt {
            path: path.to_path_buf(),
            detail: format!("invalid memory schema version {version}"),
        });
    }
    if version == latest {
        return Ok(());
    }
    conn.execute_batch("BEGIN IMMEDIATE").map_err(e)?;
    // Re-read under the write lock: another process may have migrated meanwhile.
    let result = (|| {
        let now: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(now.max(0) as usize) {
            conn.execute_batch(sql)?;
            conn.execute_batch(&format!("PRAGMA user_version = {}", i + 1))?;
        }
        Ok::<_, rusqlite::Error>(())
    })();
    match result {
        Ok(()) => conn.execute_batch("COMMIT").map_err(e),
        Err(err) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(e(err))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrates_fresh_and_reopens() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("memory.db");
        let c = open_db(&p).unwrap();
        let v: i64 = c
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, latest_version());
        let mode: String = c
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let fk: i64 = c
            .query_row("PRAGMA foreign_keys", [], |r| r.get(0))
            .unwrap();
        assert_eq!(fk, 1);
        drop(c);
        open_db(&p).unwrap();
    }

    #[test]
    fn fts5_unicode61_and_trigram_are_built_in() {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch(
            "CREATE VIRTUAL TABLE a USING fts5(t, tokenize='unicode61');
             CREATE VIRTUAL TABLE b USING fts5(t, tokenize='trigram');
             INSERT INTO b(t) VALUES ('東京の天気は晴れです');",
        )
        .unwrap();
        let n: i64 = c
            .query_row(
                "SELECT count(*) FROM b WHERE b MATCH '\"天気は\"'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(n, 1);
    }

    #[test]
    fn index_state_made_before_migration_3_gains_the_file_identity() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("memory.db");
        let c = Connection::open(&p).unwrap();
        for sql in &MIGRATIONS[..2] {
            c.execute_batch(sql).unwrap();
        }
        // What an older bulkhead made on first use of the indexer.
        c.execute_batch(
            "PRAGMA user_version = 2;
             CREATE TABLE index_state (source TEXT PRIMARY KEY, kind TEXT NOT NULL,
                 hash TEXT NOT NULL DEFAULT '', bytes INTEGER NOT NULL DEFAULT 0,
                 messages INTEGER NOT NULL DEFAULT 0, updated INTEGER NOT NULL) WITHOUT ROWID;
             INSERT INTO index_state (source, kind, hash, updated) VALUES ('MEMORY.md', 'file', 'h', 1);",
        )
        .unwrap();
        drop(c);
        let c = open_db(&p).unwrap();
        let (hash, ino, mtime): (String, i64, i64) = c
            .query_row(
                "SELECT hash, ino, mtime_ns FROM index_state WHERE source = 'MEMORY.md'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        assert_eq!((hash.as_str(), ino, mtime), ("h", -1, -1));
        // And on a fresh database.
        let p2 = d.path().join("fresh.db");
        let c = open_db(&p2).unwrap();
        c.execute(
            "INSERT INTO index_state (source, kind, updated, ino, size, mtime_ns, ctime_ns)
             VALUES ('a', 'file', 1, 2, 3, 4, 5)",
            [],
        )
        .unwrap();
    }

    #[test]
    fn newer_schema_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("memory.db");
        drop(open_db(&p).unwrap());
        let c = Connection::open(&p).unwrap();
        c.execute_batch(&format!("PRAGMA user_version = {}", latest_version() + 1))
            .unwrap();
        drop(c);
        let err = open_db(&p).unwrap_err().to_string();
        assert!(err.contains("newer than this bulkhead knows"), "{err}");
    }
}
