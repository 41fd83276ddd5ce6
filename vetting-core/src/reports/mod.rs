//! Reports of a run: a JSON document with a versioned schema
//! (`docs/report-schema.md`) and one self-contained HTML page (inline CSS
//! and SVG charts, no script, nothing fetched), both written atomically
//! under `{data_dir}/reports/`.

mod html;
pub mod ocp;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use serde::{Deserialize, Serialize};
use vetting_probes::inventory::{Inventory, LinkState, Missing};

use crate::error::OrchestratorError;
use crate::model::{AuditRecord, TransitionRecord};
use crate::orchestrator::Orchestrator;
use crate::spec::SpecDiff;
use crate::store::StoreError;
use crate::store::entities::{artifact, measurement, stage};

/// The version of the JSON report document. Bump it on any change an
/// older reader would misread (adding a field is not one).
pub const REPORT_SCHEMA_VERSION: u32 = 1;

/// Why a report could not be built or written.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    Orchestrator(#[from] OrchestratorError),
    #[error("run id `{0}` cannot name a report file")]
    BadRunId(String),
    #[error("cannot render the HTML report")]
    Render(#[source] minijinja::Error),
    #[error("cannot encode the JSON report")]
    Json(#[source] serde_json::Error),
    #[error("I/O error while {doing} {}", path.display())]
    Io {
        doing: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

type Result<T, E = ReportError> = std::result::Result<T, E>;

fn db(doing: &'static str) -> impl FnOnce(sea_orm::DbErr) -> ReportError {
    move |source| {
        ReportError::Orchestrator(OrchestratorError::Store(StoreError::Db { doing, source }))
    }
}

/// Where the two report files of a run were written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportPaths {
    pub json: PathBuf,
    pub html: PathBuf,
}

/// The JSON report document (schema in `docs/report-schema.md`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub schema_version: u32,
    /// When the report was built (Unix milliseconds, UTC, as every `*_ms`).
    pub generated_at_ms: i64,
    pub run: RunSection,
    pub host: HostSection,
    /// Every stage attempt, in stage order then attempt.
    pub stages: Vec<StageSection>,
    /// What SpecValidate found (matches included, as `info`).
    pub spec_diffs: Vec<SpecDiff>,
    /// The latest inventory of the run, summarised; `null` when none was
    /// stored or it cannot be read (see `notes`).
    pub inventory: Option<InventorySummary>,
    /// Per measurement name and unit, over the whole run.
    pub measurements: Vec<MeasurementSummary>,
    pub artifacts: Vec<ArtifactSection>,
    pub transitions: Vec<TransitionRecord>,
    /// Operator (and orchestrator) actions on the run: who, when, what was
    /// acknowledged.
    pub audit: Vec<AuditRecord>,
    /// Anything that could not be read while building the report.
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunSection {
    pub id: String,
    pub state: String,
    pub hold_reason: Option<String>,
    pub failure_reason: Option<String>,
    pub override_flags: Vec<String>,
    pub created_by: String,
    pub created_at_ms: i64,
    pub queued_at_ms: Option<i64>,
    pub hello_at_ms: Option<i64>,
    pub claimed_at_ms: Option<i64>,
    pub updated_at_ms: i64,
    pub ended_at_ms: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostSection {
    pub id: i64,
    pub name: String,
    pub macs: Vec<String>,
    pub serial: Option<String>,
    pub system_uuid: Option<String>,
    pub spec_profile: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageSection {
    pub stage: String,
    pub attempt: u32,
    /// `running`, `passed`, `warned`, `failed`, `skipped`, `held`,
    /// `timed_out`, `agent_lost`, `cancelled`, `ended`.
    pub outcome: String,
    pub reason: Option<String>,
    pub started_at_ms: i64,
    pub finished_at_ms: Option<i64>,
    pub duration_ms: Option<i64>,
    /// The orchestrator's verdict (the one that counts), as stored.
    pub verdict: Option<serde_json::Value>,
    /// The agent's own verdict, as stored.
    pub agent_verdict: Option<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MeasurementSummary {
    pub name: String,
    pub unit: String,
    pub count: u64,
    pub min: f64,
    pub max: f64,
    pub avg: f64,
    pub first_at_ms: i64,
    pub last_at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactSection {
    pub name: String,
    pub stage: Option<String>,
    pub attempt: Option<u32>,
    pub tool: Option<String>,
    pub size_bytes: i64,
    pub sha256: String,
    pub created_at_ms: i64,
    /// Where the file lies on the orchestrator (deleted after retention).
    pub path: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InventorySummary {
    /// The InventoryCheck attempt it came from.
    pub attempt: u32,
    pub schema_version: u32,
    pub collected_at: String,
    pub system: SystemSummary,
    pub cpu: CpuSummary,
    pub memory: MemorySummary,
    pub disks: Vec<DiskSummary>,
    pub nics: Vec<NicSummary>,
    pub gpus: Vec<GpuSummary>,
    pub psus: Vec<PsuSummary>,
    pub missing: Vec<Missing>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SystemSummary {
    pub vendor: Option<String>,
    pub product: Option<String>,
    pub serial: Option<String>,
    pub uuid: Option<String>,
    pub bios_version: Option<String>,
    pub bmc_present: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuSummary {
    pub model: Option<String>,
    pub sockets: u32,
    pub cores: u32,
    pub threads: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemorySummary {
    pub total_bytes: u64,
    pub dimm_count: u32,
    pub slots_total: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskSummary {
    pub name: String,
    pub model: Option<String>,
    pub serial: Option<String>,
    pub wwn: Option<String>,
    pub size_bytes: u64,
    pub transport: Option<String>,
    pub rotational: Option<bool>,
    pub removable: bool,
    #[serde(rename = "virtual")]
    pub is_virtual: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NicSummary {
    pub name: String,
    pub mac: Option<String>,
    pub driver: Option<String>,
    pub max_supported_mbps: Option<u64>,
    pub link: LinkState,
    pub speed_mbps: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuSummary {
    pub model: Option<String>,
    pub serial: Option<String>,
    pub uuid: Option<String>,
    pub pci_slot: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PsuSummary {
    pub name: String,
    pub status: Option<String>,
    pub watts: Option<u64>,
    pub model: Option<String>,
    pub serial: Option<String>,
}

impl InventorySummary {
    pub fn from_inventory(attempt: u32, inventory: &Inventory) -> InventorySummary {
        InventorySummary {
            attempt,
            schema_version: inventory.schema_version,
            collected_at: inventory.collected_at.to_rfc3339(),
            system: SystemSummary {
                vendor: inventory.system.vendor.clone(),
                product: inventory.system.product.clone(),
                serial: inventory.system.serial.clone(),
                uuid: inventory.system.uuid.clone(),
                bios_version: inventory.system.bios_version.clone(),
                bmc_present: inventory.system.bmc_present,
            },
            cpu: CpuSummary {
                model: inventory.cpus.model.clone().or_else(|| {
                    inventory
                        .cpus
                        .packages
                        .iter()
                        .find_map(|package| package.model.clone())
                }),
                sockets: inventory.cpus.sockets,
                cores: inventory.cpus.cores,
                threads: inventory.cpus.threads,
            },
            memory: MemorySummary {
                total_bytes: inventory.memory.total_bytes,
                dimm_count: u32::try_from(inventory.memory.dimms.len()).unwrap_or(u32::MAX),
                slots_total: inventory.memory.slots_total,
            },
            disks: inventory
                .disks
                .iter()
                .map(|disk| DiskSummary {
                    name: disk.name.clone(),
                    model: disk.model.clone(),
                    serial: disk.serial.clone(),
                    wwn: disk.wwn.clone(),
                    size_bytes: disk.size_bytes,
                    transport: disk.transport.clone(),
                    rotational: disk.rotational,
                    removable: disk.removable,
                    is_virtual: disk.is_virtual,
                })
                .collect(),
            nics: inventory
                .nics
                .iter()
                .map(|nic| NicSummary {
                    name: nic.name.clone(),
                    mac: nic.mac.clone(),
                    driver: nic.driver.clone(),
                    max_supported_mbps: nic.max_supported_mbps(),
                    link: nic.link,
                    speed_mbps: nic.speed_mbps,
                })
                .collect(),
            gpus: inventory
                .gpus
                .iter()
                .map(|gpu| GpuSummary {
                    model: gpu.model.clone(),
                    serial: gpu.serial.clone(),
                    uuid: gpu.uuid.clone(),
                    pci_slot: gpu.pci_slot.clone(),
                })
                .collect(),
            psus: inventory
                .psus
                .iter()
                .map(|psu| PsuSummary {
                    name: psu.name.clone(),
                    status: psu.status.clone(),
                    watts: psu.watts,
                    model: psu.model.clone(),
                    serial: psu.serial.clone(),
                })
                .collect(),
            missing: inventory.missing.clone(),
        }
    }
}

/// The stages in the order a run goes through them (the orchestrator-owned
/// `SpecValidate` after `InventoryCheck`).
pub const STAGE_ORDER: [&str; 8] = [
    "InventoryCheck",
    "SpecValidate",
    "SMART",
    "CPUStress",
    "Storage",
    "Network",
    "GPU",
    "PSU",
];

fn stage_rank(name: &str) -> usize {
    STAGE_ORDER
        .iter()
        .position(|known| *known == name)
        .unwrap_or(STAGE_ORDER.len())
}

/// One time series of a run, for the charts: (at_ms, value) in time order.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Series {
    pub name: String,
    pub unit: String,
    pub points: Vec<(i64, f64)>,
}

/// Everything the report is built from, read once.
pub(crate) struct Gathered {
    pub report: Report,
    pub series: Vec<Series>,
}

/// Builds the JSON report of a run from the database.
pub async fn build_report(orchestrator: &Orchestrator, run_id: &str) -> Result<Report> {
    Ok(gather(orchestrator, run_id).await?.report)
}

async fn gather(orchestrator: &Orchestrator, run_id: &str) -> Result<Gathered> {
    let connection = orchestrator.store().db();
    let run = orchestrator.run(run_id).await?;
    let host = orchestrator.host(run.host_id).await?;
    let mut notes = Vec::new();

    let mut stage_rows = stage::Entity::find()
        .filter(stage::Column::RunId.eq(run_id))
        .all(connection)
        .await
        .map_err(db("reading stages"))?;
    stage_rows.sort_by(|a, b| {
        (stage_rank(&a.stage), a.attempt, a.started_at_ms).cmp(&(
            stage_rank(&b.stage),
            b.attempt,
            b.started_at_ms,
        ))
    });
    let mut parse_json = |what: String, text: Option<String>| -> Option<serde_json::Value> {
        let text = text?;
        match serde_json::from_str(&text) {
            Ok(value) => Some(value),
            Err(error) => {
                notes.push(format!("{what} is not JSON ({error}); kept as text"));
                Some(serde_json::Value::String(text))
            }
        }
    };
    let stages: Vec<StageSection> = stage_rows
        .into_iter()
        .map(|row| {
            let label = format!("{} attempt {}", row.stage, row.attempt);
            StageSection {
                verdict: parse_json(format!("the verdict of {label}"), row.verdict),
                agent_verdict: parse_json(
                    format!("the agent's verdict of {label}"),
                    row.agent_verdict,
                ),
                duration_ms: row.finished_at_ms.map(|end| end - row.started_at_ms),
                stage: row.stage,
                attempt: row.attempt.max(0) as u32,
                outcome: row.outcome,
                reason: row.reason,
                started_at_ms: row.started_at_ms,
                finished_at_ms: row.finished_at_ms,
            }
        })
        .collect();

    let spec_diffs = orchestrator.operator().spec_diffs(run_id).await?;

    let inventory = match orchestrator
        .operator()
        .latest_inventory_json(run_id)
        .await?
    {
        None => None,
        Some((attempt, text)) => match serde_json::from_str::<Inventory>(&text) {
            Ok(parsed) => Some(InventorySummary::from_inventory(attempt, &parsed)),
            Err(error) => {
                notes.push(format!(
                    "the inventory of InventoryCheck attempt {attempt} cannot be read: {error}"
                ));
                None
            }
        },
    };

    let rows: Vec<(String, String, f64, i64)> = measurement::Entity::find()
        .select_only()
        .column(measurement::Column::Name)
        .column(measurement::Column::Unit)
        .column(measurement::Column::Value)
        .column(measurement::Column::AtMs)
        .filter(measurement::Column::RunId.eq(run_id))
        .order_by_asc(measurement::Column::AtMs)
        .order_by_asc(measurement::Column::Id)
        .into_tuple()
        .all(connection)
        .await
        .map_err(db("reading measurements"))?;
    let mut by_name: BTreeMap<(String, String), Vec<(i64, f64)>> = BTreeMap::new();
    for (name, unit, value, at_ms) in rows {
        if value.is_finite() {
            by_name
                .entry((name, unit))
                .or_default()
                .push((at_ms, value));
        }
    }
    let measurements = by_name
        .iter()
        .filter_map(|((name, unit), points)| {
            let first = points.first()?;
            let last = points.last()?;
            let (min, max, sum) = points.iter().fold(
                (f64::INFINITY, f64::NEG_INFINITY, 0.0),
                |(min, max, sum), (_, value)| (min.min(*value), max.max(*value), sum + value),
            );
            Some(MeasurementSummary {
                name: name.clone(),
                unit: unit.clone(),
                count: points.len() as u64,
                min,
                max,
                avg: sum / points.len() as f64,
                first_at_ms: first.0,
                last_at_ms: last.0,
            })
        })
        .collect();
    let series = by_name
        .into_iter()
        .map(|((name, unit), points)| Series { name, unit, points })
        .collect();

    let artifacts = artifact::Entity::find()
        .filter(artifact::Column::RunId.eq(run_id))
        .order_by_asc(artifact::Column::Id)
        .all(connection)
        .await
        .map_err(db("reading artifacts"))?
        .into_iter()
        .map(|row| ArtifactSection {
            name: row.name,
            stage: row.stage,
            attempt: row.attempt.map(|attempt| attempt.max(0) as u32),
            tool: row.tool,
            size_bytes: row.size_bytes,
            sha256: row.sha256,
            created_at_ms: row.created_at_ms,
            path: row.path,
        })
        .collect();

    let transitions = orchestrator.operator().transitions(Some(run_id)).await?;
    let audit = orchestrator.operator().audit_log(Some(run_id)).await?;

    let report = Report {
        schema_version: REPORT_SCHEMA_VERSION,
        generated_at_ms: orchestrator.now_ms(),
        run: RunSection {
            id: run.id.clone(),
            state: run.state.as_str().to_string(),
            hold_reason: run.hold_reason.map(|reason| reason.as_str().to_string()),
            failure_reason: run.failure_reason.clone(),
            override_flags: run.override_flags.clone(),
            created_by: run.created_by.clone(),
            created_at_ms: run.created_at_ms,
            queued_at_ms: run.queued_at_ms,
            hello_at_ms: run.hello_at_ms,
            claimed_at_ms: run.claimed_at_ms,
            updated_at_ms: run.updated_at_ms,
            ended_at_ms: run.ended_at_ms,
        },
        host: HostSection {
            id: host.id,
            name: host.name.clone(),
            macs: host.macs.iter().map(|mac| mac.to_string()).collect(),
            serial: host.serial.clone(),
            system_uuid: host.system_uuid.clone(),
            spec_profile: host.spec_profile.clone(),
        },
        stages,
        spec_diffs,
        inventory,
        measurements,
        artifacts,
        transitions,
        audit,
        notes,
    };
    Ok(Gathered { report, series })
}

/// Renders the self-contained HTML page of a report.
pub fn render_html(report: &Report) -> Result<String> {
    html::render(report, &[])
}

/// Builds the report of a run and writes `{data_dir}/reports/{run_id}.json`
/// and `.html`, each atomically (a temporary file, synced, then renamed):
/// a reader sees the old file or the new one, never half of one.
pub async fn write_reports(orchestrator: &Orchestrator, run_id: &str) -> Result<ReportPaths> {
    if run_id.is_empty()
        || run_id.len() > 128
        || !run_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(ReportError::BadRunId(run_id.to_string()));
    }
    let gathered = gather(orchestrator, run_id).await?;
    let folder = orchestrator.config().data_dir.join("reports");
    let paths = ReportPaths {
        json: folder.join(format!("{run_id}.json")),
        html: folder.join(format!("{run_id}.html")),
    };
    let written = paths.clone();
    // rendering is CPU work: off the runtime's threads, beside the writes
    tokio::task::spawn_blocking(move || -> Result<()> {
        let json = serde_json::to_vec_pretty(&gathered.report).map_err(ReportError::Json)?;
        let html = html::render(&gathered.report, &gathered.series)?;
        std::fs::create_dir_all(&folder).map_err(|source| ReportError::Io {
            doing: "creating the reports folder",
            path: folder.clone(),
            source,
        })?;
        write_atomically(&written.json, &json)?;
        write_atomically(&written.html, html.as_bytes())?;
        Ok(())
    })
    .await
    .map_err(|error| ReportError::Io {
        doing: "writing the reports (the writer task failed)",
        path: paths.json.clone(),
        source: std::io::Error::other(error.to_string()),
    })??;
    Ok(paths)
}

/// Writes `bytes` to a temporary file beside `path`, syncs it and renames
/// it over `path`.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let folder = path.parent().unwrap_or_else(|| Path::new("."));
    let file_name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temporary = folder.join(format!(
        ".{file_name}.{}.tmp",
        uuid::Uuid::new_v4().simple()
    ));
    let io = |doing: &'static str, at: &Path| {
        let at = at.to_path_buf();
        move |source| ReportError::Io {
            doing,
            path: at,
            source,
        }
    };
    let result = (|| {
        let mut file = std::fs::File::create(&temporary).map_err(io("creating", &temporary))?;
        file.write_all(bytes).map_err(io("writing", &temporary))?;
        file.sync_all().map_err(io("syncing", &temporary))?;
        std::fs::rename(&temporary, path).map_err(io("renaming into place", path))?;
        if let Ok(directory) = std::fs::File::open(folder) {
            // make the rename itself durable; not every filesystem allows it
            let _ = directory.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    result
}
