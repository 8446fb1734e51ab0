//! The SQLite schema and its versions.
//!
//! The version lives in `PRAGMA user_version`. A new file gets [`CURRENT`] directly; an
//! older file is migrated step by step at start-up, each step in one transaction, so a
//! crash mid-migration leaves the previous version intact. A file from a newer Hearth is
//! refused rather than guessed at.
//!
//! Version history:
//! * 1 — the first schema (files written before versions were recorded say 0).
//! * 2 — fewer B-trees per inbound notice, from the benchmark's profile (issue 5):
//!   `exchanges` and `items` are clustered on their keys (`WITHOUT ROWID`) instead of a
//!   rowid table plus a unique index; `items_by_exchange` is gone, because an item's id
//!   starts with its exchange's reference ID (`<ref>-<n>`), so the primary key already
//!   finds an exchange's items; `feed` drops `AUTOINCREMENT` (rows are never deleted, so
//!   `max(seq) + 1` never reuses a number a reader saw) and with it a `sqlite_sequence`
//!   update per row. Their `CHECK`s on state and change are written as `=`/`OR` chains:
//!   SQLite evaluates `x IN (three or more constants)` by building a temporary B-tree on
//!   every INSERT, ~3% of an inbound notice's CPU in the profile.
//! * 3 — `items.labels`: each item's labels beside its JSON, so a feed page is served
//!   without parsing the items it carries (the largest share of the feed's profile).
//! * 4 — the feed's `consent` change: a tenant's consent changed, so what housing may see
//!   of them may have (a `CHECK` cannot be altered in place: the feed is rebuilt, every
//!   row and number kept).

use rusqlite::Connection;

/// The schema version this build writes.
pub const CURRENT: i64 = 4;

/// The current schema. `IF NOT EXISTS` throughout: applying it to a current file is a no-op.
pub const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS tenants (
    tenant_id     TEXT PRIMARY KEY,
    registered_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS tenant_identifiers (
    system    TEXT NOT NULL,
    value     TEXT NOT NULL,
    tenant_id TEXT NOT NULL REFERENCES tenants(tenant_id),
    PRIMARY KEY (system, value)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS tenant_identifiers_by_tenant ON tenant_identifiers(tenant_id);

CREATE TABLE IF NOT EXISTS consents (
    consent_id   TEXT NOT NULL,
    version      INTEGER NOT NULL,
    tenant_id    TEXT NOT NULL REFERENCES tenants(tenant_id),
    recorded_at  TEXT NOT NULL,
    terms        TEXT NOT NULL,
    resource     TEXT NOT NULL,
    reference_id TEXT NOT NULL,
    PRIMARY KEY (consent_id, version)
);
CREATE INDEX IF NOT EXISTS consents_by_tenant ON consents(tenant_id);

CREATE TABLE IF NOT EXISTS exchanges (
    reference_id  TEXT PRIMARY KEY,
    partner       TEXT NOT NULL,
    resource_type TEXT NOT NULL,
    ident_system  TEXT NOT NULL,
    ident_value   TEXT NOT NULL,
    digest        TEXT NOT NULL,
    tenant_id     TEXT NOT NULL REFERENCES tenants(tenant_id),
    state         TEXT NOT NULL CHECK (state = 'current' OR state = 'superseded' OR state = 'retracted'),
    received_at   TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS exchanges_by_key ON exchanges(partner, resource_type, ident_value, ident_system);

-- item_id is `<reference_id>-<n>`: an exchange's items are a key range.
CREATE TABLE IF NOT EXISTS items (
    item_id      TEXT PRIMARY KEY,
    reference_id TEXT NOT NULL REFERENCES exchanges(reference_id),
    tenant_id    TEXT NOT NULL,
    state        TEXT NOT NULL CHECK (state = 'current' OR state = 'superseded' OR state = 'retracted'),
    body         TEXT NOT NULL,
    -- The item's sensitivity labels (a JSON array, also inside body), so the feed's
    -- consent filter reads them without parsing the item.
    labels       TEXT NOT NULL DEFAULT '[]'
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS items_by_tenant ON items(tenant_id, state);

CREATE TABLE IF NOT EXISTS feed (
    seq          INTEGER PRIMARY KEY,
    tenant_id    TEXT NOT NULL,
    change       TEXT NOT NULL CHECK (
        change = 'added' OR change = 'superseded' OR change = 'retracted' OR change = 'renewal-due' OR change = 'response'
        OR change = 'consent'),
    item_id      TEXT REFERENCES items(item_id),
    reference_id TEXT NOT NULL,
    at           TEXT NOT NULL,
    detail       TEXT
);

-- Care coordination notes and their outbox: one row per note, delivered at least once.
CREATE TABLE IF NOT EXISTS notes (
    reference_id    TEXT PRIMARY KEY,
    tenant_id       TEXT NOT NULL REFERENCES tenants(tenant_id),
    partner         TEXT NOT NULL,
    created_at      TEXT NOT NULL,
    note            TEXT NOT NULL,
    payload         TEXT NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'dead', 'stopped')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms INTEGER NOT NULL,
    give_up_ms      INTEGER NOT NULL,
    last_error      TEXT,
    delivered_at    TEXT
);
CREATE INDEX IF NOT EXISTS notes_due ON notes(state, next_attempt_ms);
CREATE INDEX IF NOT EXISTS notes_by_tenant ON notes(tenant_id);

CREATE TABLE IF NOT EXISTS note_responses (
    reference_id TEXT PRIMARY KEY,
    note_ref     TEXT NOT NULL REFERENCES notes(reference_id),
    body         TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS note_responses_by_note ON note_responses(note_ref);

-- Joint case reviews: readable only by the tenant's review team and auditors.
CREATE TABLE IF NOT EXISTS reviews (
    review_id   TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants(tenant_id),
    recorded_at TEXT NOT NULL,
    body        TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS reviews_by_tenant ON reviews(tenant_id, review_id);

-- Open and past renewal prompts; at most one open (cleared_at IS NULL) per tenant.
CREATE TABLE IF NOT EXISTS renewals (
    tenant_id    TEXT NOT NULL REFERENCES tenants(tenant_id),
    reason       TEXT NOT NULL,
    since        TEXT NOT NULL,
    reference_id TEXT NOT NULL,
    cleared_at   TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS renewals_open ON renewals(tenant_id) WHERE cleared_at IS NULL;

-- Emergency exchanges and their stated reasons, for review (kept out of the audit body).
CREATE TABLE IF NOT EXISTS break_glass (
    reference_id TEXT PRIMARY KEY,
    recorded_at  TEXT NOT NULL,
    tenant_id    TEXT,
    principal    TEXT,
    purpose      TEXT NOT NULL,
    reason       TEXT NOT NULL
);

-- The review of each emergency exchange: whether it was justified. One per exchange and
-- never changed; its audit record carries the same, in the chain.
CREATE TABLE IF NOT EXISTS break_glass_reviews (
    reference_id TEXT PRIMARY KEY REFERENCES break_glass(reference_id),
    reviewed_at  TEXT NOT NULL,
    reviewer     TEXT NOT NULL,
    outcome      TEXT NOT NULL CHECK (outcome = 'justified' OR outcome = 'not-justified')
);
CREATE TRIGGER IF NOT EXISTS break_glass_reviews_are_final_update BEFORE UPDATE ON break_glass_reviews
BEGIN SELECT RAISE(ABORT, 'a break-glass review is final'); END;
CREATE TRIGGER IF NOT EXISTS break_glass_reviews_are_final_delete BEFORE DELETE ON break_glass_reviews
BEGIN SELECT RAISE(ABORT, 'a break-glass review is final'); END;

CREATE TABLE IF NOT EXISTS audit (
    seq          INTEGER PRIMARY KEY,
    reference_id TEXT NOT NULL,
    recorded_at  TEXT NOT NULL,
    prev_hash    BLOB NOT NULL,
    hash         BLOB NOT NULL,
    body         TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_by_reference ON audit(reference_id);
-- The reasons given for emergency access are kept for review as they were stated.
CREATE TRIGGER IF NOT EXISTS break_glass_is_append_only_update BEFORE UPDATE ON break_glass
BEGIN SELECT RAISE(ABORT, 'break-glass reasons are append-only'); END;
CREATE TRIGGER IF NOT EXISTS break_glass_is_append_only_delete BEFORE DELETE ON break_glass
BEGIN SELECT RAISE(ABORT, 'break-glass reasons are append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_is_append_only_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_is_append_only_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
"#;

/// Version 1 → 2: rebuild `exchanges`, `items` and `feed` in their new shape, keeping
/// every row (and every feed sequence number, so housing's cursors stay valid). The old
/// tables step aside under a `_v1` name, [`SCHEMA`] creates the new ones (the shapes are
/// written once, there), and the rows are copied across. Their indexes go first, or
/// `CREATE INDEX IF NOT EXISTS` would find the old ones by name and skip the new.
const V1_TO_V2_SET_ASIDE: &str = r#"
DROP INDEX exchanges_by_key;
DROP INDEX items_by_tenant;
DROP INDEX items_by_exchange;
ALTER TABLE exchanges RENAME TO exchanges_v1;
ALTER TABLE items RENAME TO items_v1;
ALTER TABLE feed RENAME TO feed_v1;
"#;
const V1_TO_V2_COPY: &str = r#"
INSERT INTO exchanges (reference_id, partner, resource_type, ident_system, ident_value, digest, tenant_id, state, received_at)
    SELECT reference_id, partner, resource_type, ident_system, ident_value, digest, tenant_id, state, received_at FROM exchanges_v1;
INSERT INTO items (item_id, reference_id, tenant_id, state, body, labels)
    SELECT item_id, reference_id, tenant_id, state, body, LABELS_FROM_BODY FROM items_v1;
INSERT INTO feed (seq, tenant_id, change, item_id, reference_id, at, detail)
    SELECT seq, tenant_id, change, item_id, reference_id, at, detail FROM feed_v1;
DROP TABLE feed_v1;
DROP TABLE items_v1;
DROP TABLE exchanges_v1;
"#;

/// Version 2 to 3: the labels column, filled from each stored item.
const V2_TO_V3: &str = r#"
ALTER TABLE items ADD COLUMN labels TEXT NOT NULL DEFAULT '[]';
UPDATE items SET labels = LABELS_FROM_BODY;
"#;

/// Version 3 to 4: the feed steps aside, [`SCHEMA`] creates it with the `consent` change
/// allowed, and its rows come back with their sequence numbers.
const V3_TO_V4_SET_ASIDE: &str = "ALTER TABLE feed RENAME TO feed_v3;";
const V3_TO_V4_COPY: &str = r#"
INSERT INTO feed (seq, tenant_id, change, item_id, reference_id, at, detail)
    SELECT seq, tenant_id, change, item_id, reference_id, at, detail FROM feed_v3;
DROP TABLE feed_v3;
"#;

/// An item's labels from its stored JSON (`[]` when it has none).
const LABELS_FROM_BODY: &str = "CASE WHEN json_valid(body) \
    THEN coalesce(json_extract(body, '$.labels'), '[]') ELSE '[]' END";

/// Brings the file to [`CURRENT`]: creates it when empty, migrates it when older.
pub fn prepare(conn: &mut Connection) -> rusqlite::Result<()> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let has_tables: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'exchanges')",
        [],
        |r| r.get(0),
    )?;
    match (version, has_tables) {
        (0, false) => {
            let tx = conn.transaction()?;
            tx.execute_batch(SCHEMA)?;
            tx.pragma_update(None, "user_version", CURRENT)?;
            tx.commit()?;
        }
        (v, _) if v > CURRENT => {
            return Err(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
                Some(format!(
                    "the store has schema version {v}, newer than this Hearth's {CURRENT}; run the newer Hearth"
                )),
            ));
        }
        (v, _) => {
            // Files from before versions were recorded are version 1.
            if v.max(1) < 2 {
                // The rebuilt tables take their shape from SCHEMA, so this step lands
                // on the current version, labels column included.
                let copy = V1_TO_V2_COPY.replace("LABELS_FROM_BODY", LABELS_FROM_BODY);
                migrate(
                    conn,
                    &format!("{V1_TO_V2_SET_ASIDE}{SCHEMA}{copy}"),
                    CURRENT,
                )?;
            } else {
                if v < 3 {
                    migrate(
                        conn,
                        &V2_TO_V3.replace("LABELS_FROM_BODY", LABELS_FROM_BODY),
                        3,
                    )?;
                }
                if v < 4 {
                    migrate(
                        conn,
                        &format!("{V3_TO_V4_SET_ASIDE}{SCHEMA}{V3_TO_V4_COPY}"),
                        4,
                    )?;
                }
            }
            conn.execute_batch(SCHEMA)?;
        }
    }
    Ok(())
}

/// One migration step in one transaction. Foreign keys are off while tables are rebuilt
/// (SQLite's documented procedure for changing a table's shape) and checked before the
/// commit, so a step that would leave a dangling reference is rolled back whole.
fn migrate(conn: &mut Connection, steps: &str, to: i64) -> rusqlite::Result<()> {
    tracing::info!(to, "migrating the store schema");
    conn.pragma_update(None, "foreign_keys", false)?;
    let result = (|| {
        let tx = conn.transaction()?;
        tx.execute_batch(steps)?;
        let dangling: i64 =
            tx.query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| {
                r.get(0)
            })?;
        if dangling > 0 {
            return Err(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CONSTRAINT),
                Some(format!(
                    "migration to schema {to} found {dangling} dangling references; nothing was changed"
                )),
            ));
        }
        tx.pragma_update(None, "user_version", to)?;
        tx.commit()
    })();
    conn.pragma_update(None, "foreign_keys", true)?;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first schema's three rebuilt tables, as files written by Hearth 0.1 hold them.
    const V1: &str = r#"
    CREATE TABLE tenants (tenant_id TEXT PRIMARY KEY, registered_at TEXT NOT NULL);
    CREATE TABLE exchanges (
        reference_id TEXT PRIMARY KEY, partner TEXT NOT NULL, resource_type TEXT NOT NULL,
        ident_system TEXT NOT NULL, ident_value TEXT NOT NULL, digest TEXT NOT NULL,
        tenant_id TEXT NOT NULL REFERENCES tenants(tenant_id),
        state TEXT NOT NULL CHECK (state IN ('current', 'superseded', 'retracted')),
        received_at TEXT NOT NULL);
    CREATE INDEX exchanges_by_key ON exchanges(partner, resource_type, ident_value, ident_system);
    CREATE TABLE items (
        item_id TEXT PRIMARY KEY, reference_id TEXT NOT NULL REFERENCES exchanges(reference_id),
        tenant_id TEXT NOT NULL, state TEXT NOT NULL CHECK (state IN ('current', 'superseded', 'retracted')),
        body TEXT NOT NULL);
    CREATE INDEX items_by_tenant ON items(tenant_id, state);
    CREATE INDEX items_by_exchange ON items(reference_id);
    CREATE TABLE feed (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, tenant_id TEXT NOT NULL,
        change TEXT NOT NULL CHECK (change IN ('added', 'superseded', 'retracted', 'renewal-due', 'response')),
        item_id TEXT REFERENCES items(item_id), reference_id TEXT NOT NULL, at TEXT NOT NULL, detail TEXT);
    INSERT INTO tenants VALUES ('T-1', '2026-01-01T00:00:00Z');
    INSERT INTO exchanges VALUES ('01A', 'clinic', 'Communication', 'urn:x', '1', 'sha256:0', 'T-1', 'superseded', '2026-01-01T00:00:00Z');
    INSERT INTO exchanges VALUES ('01B', 'clinic', 'Communication', 'urn:x', '1', 'sha256:1', 'T-1', 'current', '2026-01-02T00:00:00Z');
    INSERT INTO items VALUES ('01A-0', '01A', 'T-1', 'superseded', '{"a":1}');
    INSERT INTO items VALUES ('01B-0', '01B', 'T-1', 'current', '{"b":1,"labels":["SUD"]}');
    INSERT INTO feed (tenant_id, change, item_id, reference_id, at) VALUES ('T-1', 'added', '01A-0', '01A', 't');
    INSERT INTO feed (tenant_id, change, item_id, reference_id, at) VALUES ('T-1', 'added', '01B-0', '01B', 't');
    INSERT INTO feed (tenant_id, change, item_id, reference_id, at) VALUES ('T-1', 'superseded', '01A-0', '01B', 't');
    "#;

    /// Every row `sql` returns, each read by `row`.
    fn all<T>(
        conn: &Connection,
        sql: &str,
        row: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> Vec<T> {
        conn.prepare(sql)
            .unwrap()
            .query_map([], row)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    fn table_sql(conn: &Connection, name: &str) -> String {
        conn.query_row(
            "SELECT sql FROM sqlite_schema WHERE type = 'table' AND name = ?1",
            [name],
            |r| r.get(0),
        )
        .unwrap()
    }

    #[test]
    fn a_new_file_gets_the_current_schema_and_version() {
        let mut conn = Connection::open_in_memory().unwrap();
        prepare(&mut conn).unwrap();
        let v: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(v, CURRENT);
        assert!(table_sql(&conn, "items").contains("WITHOUT ROWID"));
        // The OR-chain CHECKs still refuse what the old IN lists refused.
        let bad_change = conn.execute(
            "INSERT INTO feed (tenant_id, change, reference_id, at) VALUES ('T-1', 'deleted', '01A', 't')",
            [],
        );
        assert!(bad_change.is_err());
        prepare(&mut conn).unwrap(); // idempotent
    }

    #[test]
    fn a_version_1_file_keeps_every_row_and_feed_number_through_the_migration() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(V1).unwrap();
        prepare(&mut conn).unwrap();

        let v: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(v, CURRENT);
        for t in ["exchanges", "items"] {
            assert!(table_sql(&conn, t).contains("WITHOUT ROWID"), "{t}");
        }
        assert!(!table_sql(&conn, "feed").contains("AUTOINCREMENT"));
        let leftovers: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_schema WHERE name LIKE '%_v1' OR sql LIKE '%_v1%'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(
            leftovers, 0,
            "the set-aside tables are gone and nothing refers to them"
        );
        let indexes: Vec<String> = all(
            &conn,
            "SELECT name FROM sqlite_schema WHERE type = 'index' AND name NOT LIKE 'sqlite_%' ORDER BY name",
            |r| r.get(0),
        );
        assert!(indexes.contains(&"exchanges_by_key".to_string()));
        assert!(indexes.contains(&"items_by_tenant".to_string()));
        assert!(!indexes.contains(&"items_by_exchange".to_string()));

        let feed: Vec<(i64, String)> =
            all(&conn, "SELECT seq, item_id FROM feed ORDER BY seq", |r| {
                Ok((r.get(0)?, r.get(1)?))
            });
        assert_eq!(
            feed,
            vec![
                (1, "01A-0".to_string()),
                (2, "01B-0".to_string()),
                (3, "01A-0".to_string())
            ]
        );
        let labels: Vec<(String, String)> = all(
            &conn,
            "SELECT item_id, labels FROM items ORDER BY item_id",
            |r| Ok((r.get(0)?, r.get(1)?)),
        );
        assert_eq!(
            labels,
            vec![
                ("01A-0".to_string(), "[]".to_string()),
                ("01B-0".to_string(), r#"["SUD"]"#.to_string())
            ]
        );
        // Foreign keys are on again and still enforced on the rebuilt tables.
        assert!(
            conn.execute(
                "INSERT INTO items VALUES ('01Z-0', '01Z', 'T-1', 'current', '{}', '[]')",
                []
            )
            .is_err()
        );
        // New feed rows continue after the last number housing has seen.
        conn.execute(
            "INSERT INTO feed (tenant_id, change, item_id, reference_id, at) VALUES ('T-1', 'added', '01B-0', '01B', 't')",
            [],
        )
        .unwrap();
        let last: i64 = conn
            .query_row("SELECT max(seq) FROM feed", [], |r| r.get(0))
            .unwrap();
        assert_eq!(last, 4);
    }

    #[test]
    fn a_version_2_file_gets_each_items_labels_beside_it() {
        let mut conn = Connection::open_in_memory().unwrap();
        prepare(&mut conn).unwrap();
        conn.execute_batch(
            r#"INSERT INTO tenants VALUES ('T-1', 't');
            INSERT INTO exchanges VALUES ('01A', 'clinic', 'Communication', 'urn:x', '1', 'sha256:0', 'T-1', 'current', 't');
            INSERT INTO items (item_id, reference_id, tenant_id, state, body) VALUES
                ('01A-0', '01A', 'T-1', 'current', '{"id":"01A-0","labels":["SUD","HIV"]}'),
                ('01A-1', '01A', 'T-1', 'current', '{"id":"01A-1"}');
            ALTER TABLE items DROP COLUMN labels;
            PRAGMA user_version = 2;"#,
        )
        .unwrap();
        prepare(&mut conn).unwrap();
        let labels: Vec<String> = all(&conn, "SELECT labels FROM items ORDER BY item_id", |r| {
            r.get(0)
        });
        assert_eq!(labels, [r#"["SUD","HIV"]"#, "[]"]);
        let v: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(v, CURRENT);
    }

    #[test]
    fn a_version_3_feed_keeps_its_rows_and_numbers_and_takes_consent_changes() {
        let mut conn = Connection::open_in_memory().unwrap();
        prepare(&mut conn).unwrap();
        // The version 3 feed: the same table without the `consent` change.
        conn.execute_batch(
            r#"DROP TABLE feed;
            CREATE TABLE feed (
                seq INTEGER PRIMARY KEY, tenant_id TEXT NOT NULL,
                change TEXT NOT NULL CHECK (
                    change = 'added' OR change = 'superseded' OR change = 'retracted' OR change = 'renewal-due' OR change = 'response'),
                item_id TEXT REFERENCES items(item_id), reference_id TEXT NOT NULL, at TEXT NOT NULL, detail TEXT);
            INSERT INTO tenants VALUES ('T-1', 't');
            INSERT INTO feed VALUES (7, 'T-1', 'renewal-due', NULL, '01A', 't', '{}');
            INSERT INTO feed VALUES (9, 'T-1', 'response', NULL, '01B', 't', '{}');
            PRAGMA user_version = 3;"#,
        )
        .unwrap();
        let consent = "INSERT INTO feed (tenant_id, change, reference_id, at) VALUES ('T-1', 'consent', '01C', 't')";
        assert!(conn.execute(consent, []).is_err());
        prepare(&mut conn).unwrap();
        let v: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(v, 4);
        conn.execute(consent, []).unwrap();
        let feed: Vec<(i64, String)> =
            all(&conn, "SELECT seq, change FROM feed ORDER BY seq", |r| {
                Ok((r.get(0)?, r.get(1)?))
            });
        assert_eq!(
            feed,
            vec![
                (7, "renewal-due".to_string()),
                (9, "response".to_string()),
                (10, "consent".to_string())
            ]
        );
        let leftovers: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_schema WHERE name = 'feed_v3'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(leftovers, 0);
    }

    #[test]
    fn a_file_from_a_newer_hearth_is_refused() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.pragma_update(None, "user_version", CURRENT + 1)
            .unwrap();
        let e = prepare(&mut conn).unwrap_err();
        assert!(e.to_string().contains("newer"), "{e}");
    }
}
