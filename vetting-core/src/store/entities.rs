//! sea-orm entities, one module per table (see `migrations.rs` for the schema).

pub mod host {
    //! The `hosts` table.
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "hosts")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub name: String,
        pub serial: Option<String>,
        pub system_uuid: Option<String>,
        pub spec_profile: Option<String>,
        pub spec_overrides: Option<String>,
        pub power: Option<String>,
        pub created_at_ms: i64,
        pub removed_at_ms: Option<i64>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod host_mac {
    //! The `host_macs` table.
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "host_macs")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub mac: String,
        pub host_id: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod spec_profile {
    //! The `spec_profiles` table.
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "spec_profiles")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub name: String,
        pub spec: String,
        pub updated_at_ms: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod run {
    //! The `runs` table.
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "runs")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub host_id: i64,
        pub state: String,
        pub version: i64,
        pub hold_reason: Option<String>,
        pub failure_reason: Option<String>,
        pub current_stage: Option<String>,
        pub current_attempt: Option<i32>,
        pub state_deadline_ms: Option<i64>,
        pub heartbeat_deadline_ms: Option<i64>,
        pub last_heartbeat_ms: Option<i64>,
        pub token_nonce: String,
        pub token_hash: String,
        /// `sha256-bcrypt`, or NULL for runs minted before migration 4.
        pub token_hash_scheme: Option<String>,
        pub claimed_at_ms: Option<i64>,
        pub hello_at_ms: Option<i64>,
        pub hold_on_failure: bool,
        pub override_flags: Option<String>,
        /// JSON list of the wipe-probe finding ids the last override
        /// acknowledged (armed with `override_flags`).
        pub acknowledged_findings: Option<String>,
        pub queued_at_ms: Option<i64>,
        pub created_at_ms: i64,
        pub updated_at_ms: i64,
        pub ended_at_ms: Option<i64>,
        pub next_log_seq: i64,
        pub next_sensor_seq: i64,
        pub created_by: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod stage {
    //! The `stages` table.
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "stages")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub run_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub stage: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub attempt: i32,
        pub outcome: String,
        pub reason: Option<String>,
        pub started_at_ms: i64,
        pub finished_at_ms: Option<i64>,
        pub agent_verdict: Option<String>,
        pub verdict: Option<String>,
        pub response: Option<String>,
        /// JSON list of the wipe-probe findings of a held Storage attempt
        /// (`vetting_probes::protocol::WipeFinding`).
        pub wipe_findings: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod transition {
    //! The `transitions` table.
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "transitions")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub run_id: String,
        pub from_state: String,
        pub to_state: String,
        pub event: String,
        pub actor: String,
        pub at_ms: i64,
        pub detail: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod slot {
    //! The `dispatcher_slots` table.
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "dispatcher_slots")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub slot_no: i32,
        pub run_id: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod measurement {
    //! The `measurements` table.
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "measurements")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub run_id: String,
        pub stage: Option<String>,
        pub attempt: Option<i32>,
        pub seq: Option<i64>,
        pub name: String,
        pub value: f64,
        pub unit: String,
        pub at_ms: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod spec_diff {
    //! The `spec_diffs` table.
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "spec_diffs")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub run_id: String,
        pub path: String,
        pub expected: Option<String>,
        pub actual: Option<String>,
        pub severity: String,
        pub message: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod artifact {
    //! The `artifacts` table.
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "artifacts")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub run_id: String,
        pub stage: Option<String>,
        pub attempt: Option<i32>,
        pub name: String,
        pub tool: Option<String>,
        pub path: String,
        pub size_bytes: i64,
        pub sha256: String,
        pub created_at_ms: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod inventory {
    //! The `inventories` table.
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "inventories")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub run_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub attempt: i32,
        pub inventory: String,
        pub created_at_ms: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod component {
    //! The `components` table.
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "components")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub run_id: String,
        pub kind: String,
        pub identity: String,
        pub summary: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod audit {
    //! The `audit` table.
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "audit")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub at_ms: i64,
        pub actor: String,
        pub action: String,
        pub run_id: Option<String>,
        pub host_id: Option<i64>,
        pub acknowledged: Option<String>,
        pub detail: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod log_file {
    //! The `log_files` table: how many bytes of each run log file are
    //! committed (a crash between the append and the commit is undone by
    //! truncating back to this length).
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "log_files")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub run_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub file: String,
        pub committed_len: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod api_token {
    //! The `api_tokens` table: operator API tokens (a bcrypt hash of the
    //! SHA-256 of the whole token, never the token).
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "api_tokens")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub name: String,
        pub role: String,
        pub token_hash: String,
        pub created_at_ms: i64,
        pub created_by: String,
        pub last_used_at_ms: Option<i64>,
        pub revoked_at_ms: Option<i64>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod dispatcher_state {
    //! The `dispatcher_state` table: one row (`id` 1), whether the
    //! dispatcher is paused, by whom and since when.
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "dispatcher_state")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: i32,
        pub paused: bool,
        pub paused_by: Option<String>,
        pub paused_at_ms: Option<i64>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
