//! Embedded, append-only migrations. Each is SQL written once for both
//! backends, with a few placeholders for what differs. Never edit a
//! migration that has shipped: add a new one.

/// A migration: its version and its statements.
#[derive(Debug)]
pub struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub statements: &'static [&'static str],
}

/// `{PK}`: an auto-increment 64-bit primary key; `{BOOL}`, `{DOUBLE}`: the
/// backend's boolean and double types.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "initial schema",
        statements: &[
            "CREATE TABLE hosts (
            id {PK},
            name TEXT NOT NULL UNIQUE,
            serial TEXT NULL,
            system_uuid TEXT NULL,
            spec_profile TEXT NULL,
            spec_overrides TEXT NULL,
            power TEXT NULL,
            created_at_ms BIGINT NOT NULL,
            removed_at_ms BIGINT NULL
        )",
            "CREATE TABLE host_macs (
            mac TEXT PRIMARY KEY,
            host_id BIGINT NOT NULL REFERENCES hosts(id)
        )",
            "CREATE TABLE spec_profiles (
            name TEXT PRIMARY KEY,
            spec TEXT NOT NULL,
            updated_at_ms BIGINT NOT NULL
        )",
            "CREATE TABLE runs (
            id TEXT PRIMARY KEY,
            host_id BIGINT NOT NULL REFERENCES hosts(id),
            state TEXT NOT NULL,
            version BIGINT NOT NULL,
            hold_reason TEXT NULL,
            failure_reason TEXT NULL,
            current_stage TEXT NULL,
            current_attempt INTEGER NULL,
            state_deadline_ms BIGINT NULL,
            heartbeat_deadline_ms BIGINT NULL,
            last_heartbeat_ms BIGINT NULL,
            token_nonce TEXT NOT NULL,
            token_hash TEXT NOT NULL,
            claimed_at_ms BIGINT NULL,
            hello_at_ms BIGINT NULL,
            hold_on_failure {BOOL} NOT NULL,
            override_flags TEXT NULL,
            queued_at_ms BIGINT NULL,
            created_at_ms BIGINT NOT NULL,
            updated_at_ms BIGINT NOT NULL,
            ended_at_ms BIGINT NULL,
            next_log_seq BIGINT NOT NULL,
            next_sensor_seq BIGINT NOT NULL,
            created_by TEXT NOT NULL
        )",
            "CREATE INDEX runs_state ON runs(state)",
            "CREATE INDEX runs_host ON runs(host_id)",
            "CREATE TABLE stages (
            run_id TEXT NOT NULL REFERENCES runs(id),
            stage TEXT NOT NULL,
            attempt INTEGER NOT NULL,
            outcome TEXT NOT NULL,
            reason TEXT NULL,
            started_at_ms BIGINT NOT NULL,
            finished_at_ms BIGINT NULL,
            agent_verdict TEXT NULL,
            verdict TEXT NULL,
            response TEXT NULL,
            PRIMARY KEY (run_id, stage, attempt)
        )",
            "CREATE TABLE transitions (
            id {PK},
            run_id TEXT NOT NULL,
            from_state TEXT NOT NULL,
            to_state TEXT NOT NULL,
            event TEXT NOT NULL,
            actor TEXT NOT NULL,
            at_ms BIGINT NOT NULL,
            detail TEXT NULL
        )",
            "CREATE INDEX transitions_run ON transitions(run_id)",
            "CREATE TABLE dispatcher_slots (
            slot_no INTEGER PRIMARY KEY,
            run_id TEXT NULL UNIQUE
        )",
            "CREATE TABLE measurements (
            id {PK},
            run_id TEXT NOT NULL,
            stage TEXT NULL,
            attempt INTEGER NULL,
            seq BIGINT NULL,
            name TEXT NOT NULL,
            value {DOUBLE} NOT NULL,
            unit TEXT NOT NULL,
            at_ms BIGINT NOT NULL
        )",
            "CREATE UNIQUE INDEX measurements_seq ON measurements(run_id, seq)",
            "CREATE TABLE spec_diffs (
            id {PK},
            run_id TEXT NOT NULL,
            path TEXT NOT NULL,
            expected TEXT NULL,
            actual TEXT NULL,
            severity TEXT NOT NULL,
            message TEXT NOT NULL
        )",
            "CREATE TABLE artifacts (
            id {PK},
            run_id TEXT NOT NULL,
            stage TEXT NULL,
            attempt INTEGER NULL,
            name TEXT NOT NULL,
            tool TEXT NULL,
            path TEXT NOT NULL,
            size_bytes BIGINT NOT NULL,
            sha256 TEXT NOT NULL,
            created_at_ms BIGINT NOT NULL
        )",
            "CREATE TABLE inventories (
            run_id TEXT NOT NULL,
            attempt INTEGER NOT NULL,
            inventory TEXT NOT NULL,
            created_at_ms BIGINT NOT NULL,
            PRIMARY KEY (run_id, attempt)
        )",
            "CREATE TABLE components (
            id {PK},
            run_id TEXT NOT NULL,
            kind TEXT NOT NULL,
            identity TEXT NOT NULL,
            summary TEXT NOT NULL
        )",
            "CREATE INDEX components_identity ON components(kind, identity)",
            "CREATE TABLE audit (
            id {PK},
            at_ms BIGINT NOT NULL,
            actor TEXT NOT NULL,
            action TEXT NOT NULL,
            run_id TEXT NULL,
            host_id BIGINT NULL,
            acknowledged TEXT NULL,
            detail TEXT NULL
        )",
        ],
    },
    Migration {
        version: 2,
        name: "run log files with committed lengths",
        statements: &["CREATE TABLE log_files (
            run_id TEXT NOT NULL,
            file TEXT NOT NULL,
            committed_len BIGINT NOT NULL,
            PRIMARY KEY (run_id, file)
        )"],
    },
    Migration {
        version: 3,
        name: "indexes for the reconcilers' deadline scan",
        statements: &[
            "CREATE INDEX runs_state_deadline ON runs(state_deadline_ms)",
            "CREATE INDEX runs_heartbeat_deadline ON runs(heartbeat_deadline_ms)",
        ],
    },
    Migration {
        version: 4,
        name: "how each run's token hash was made (NULL: bcrypt of the token itself)",
        statements: &["ALTER TABLE runs ADD COLUMN token_hash_scheme TEXT NULL"],
    },
    Migration {
        version: 5,
        name: "wipe-probe findings of a held stage, and the ids an override acknowledged",
        statements: &[
            "ALTER TABLE stages ADD COLUMN wipe_findings TEXT NULL",
            "ALTER TABLE runs ADD COLUMN acknowledged_findings TEXT NULL",
        ],
    },
    Migration {
        version: 6,
        name: "indexes for a stage attempt's artifacts and a run's components",
        statements: &[
            "CREATE INDEX artifacts_stage ON artifacts(run_id, stage, attempt, name)",
            "CREATE INDEX components_run ON components(run_id)",
        ],
    },
    Migration {
        version: 7,
        name: "API tokens, the dispatcher's pause, and indexes for the list pages",
        statements: &[
            "CREATE TABLE api_tokens (
            id {PK},
            name TEXT NOT NULL,
            role TEXT NOT NULL,
            token_hash TEXT NOT NULL,
            created_at_ms BIGINT NOT NULL,
            created_by TEXT NOT NULL,
            last_used_at_ms BIGINT NULL,
            revoked_at_ms BIGINT NULL
        )",
            // a name is unique among the tokens not revoked
            "CREATE UNIQUE INDEX api_tokens_live_name ON api_tokens(name) WHERE revoked_at_ms IS NULL",
            "CREATE INDEX api_tokens_name ON api_tokens(name, id)",
            "CREATE TABLE dispatcher_state (
            id INTEGER PRIMARY KEY,
            paused {BOOL} NOT NULL,
            paused_by TEXT NULL,
            paused_at_ms BIGINT NULL
        )",
            "INSERT INTO dispatcher_state (id, paused) VALUES (1, FALSE)",
            // the run pages: newest first, whole, by state, by host
            "CREATE INDEX runs_created ON runs(created_at_ms, id)",
            "CREATE INDEX runs_state_created ON runs(state, created_at_ms, id)",
            "CREATE INDEX runs_host_created ON runs(host_id, created_at_ms, id)",
            // their prefixes, now redundant
            "DROP INDEX runs_state",
            "DROP INDEX runs_host",
            // a page's hosts' MACs; the failures per stage of /metrics
            "CREATE INDEX host_macs_host ON host_macs(host_id)",
            "CREATE INDEX stages_outcome ON stages(outcome, stage)",
        ],
    },
];

/// The newest schema version this binary knows.
pub fn latest_version() -> i64 {
    MIGRATIONS.last().map_or(0, |migration| migration.version)
}

/// Fills in the placeholders for a backend.
pub fn render(statement: &str, postgres: bool) -> String {
    if postgres {
        statement
            .replace("{PK}", "BIGSERIAL PRIMARY KEY")
            .replace("{BOOL}", "BOOLEAN")
            .replace("{DOUBLE}", "DOUBLE PRECISION")
    } else {
        statement
            .replace("{PK}", "INTEGER PRIMARY KEY AUTOINCREMENT")
            .replace("{BOOL}", "BOOLEAN")
            .replace("{DOUBLE}", "REAL")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_increase_by_one() {
        for (index, migration) in MIGRATIONS.iter().enumerate() {
            assert_eq!(migration.version, index as i64 + 1, "{}", migration.name);
        }
    }
}
