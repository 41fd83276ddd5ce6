//! Artifacts: an upload is written beside its final name and moved into
//! place with its row by the writer, only for the run's current stage
//! attempt; names are plain file names.

use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter,
};
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use vetting_probes::Tool;
use vetting_probes::protocol::{ArtifactQuery, Endpoint, StageRef, StoredArtifact};

use super::{auth::*, results::*};
use crate::agent::Agent;
use crate::agent::evidence;
use crate::error::{OrchestratorError, Result, db, internal};
use crate::model::Run;
use crate::store::entities::artifact;

/// An artifact's file, written and synced under a temporary name, whose
/// row is not recorded yet (made only by
/// [`Agent::write_artifact_file`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactFile {
    pub(crate) run_id: String,
    pub(crate) upload: ArtifactQuery,
    pub(crate) stage: StageRef,
    /// Where the body was written.
    pub(crate) temporary: PathBuf,
    /// Where it goes once its row is taken.
    pub(crate) path: PathBuf,
    pub(crate) size: u64,
    pub(crate) sha256: String,
}

impl ArtifactFile {
    /// What the agent is told of the stored artifact.
    pub(crate) fn stored(&self) -> StoredArtifact {
        StoredArtifact {
            name: self.upload.name.clone(),
            size_bytes: self.size,
            sha256: self.sha256.clone(),
        }
    }

    /// Moves the written body to its final name, if its stage attempt is
    /// still `run`'s current one (as the writer's group read it); the
    /// temporary file is removed otherwise.
    pub(crate) fn place(&self, run: Option<&Run>) -> Result<()> {
        let placed = match run {
            Some(run) => check_current(run, self.stage).and_then(|()| {
                std::fs::rename(&self.temporary, &self.path).map_err(|source| {
                    OrchestratorError::Io {
                        doing: format!("storing artifact {}", self.upload.name),
                        source,
                    }
                })
            }),
            None => Err(OrchestratorError::RunNotFound(self.run_id.clone())),
        };
        if placed.is_err() {
            let _ = std::fs::remove_file(&self.temporary);
        }
        placed
    }
}

/// Records the row of an artifact's written file, replacing the row of
/// the same name and stage attempt.
pub(crate) async fn artifact_row<C: sea_orm::ConnectionTrait>(
    txn: &C,
    file: ArtifactFile,
    now_ms: i64,
) -> std::result::Result<(), sea_orm::DbErr> {
    let ArtifactFile {
        run_id,
        upload,
        stage,
        temporary: _,
        path,
        size,
        sha256,
    } = file;
    artifact::Entity::delete_many()
        .filter(artifact::Column::RunId.eq(run_id.as_str()))
        .filter(artifact::Column::Name.eq(upload.name.as_str()))
        .filter(artifact::Column::Stage.eq(stage.stage.as_str()))
        .filter(artifact::Column::Attempt.eq(stage.attempt as i32))
        .exec(txn)
        .await?;
    artifact::ActiveModel {
        run_id: Set(run_id),
        stage: Set(Some(stage.stage.as_str().to_string())),
        attempt: Set(Some(stage.attempt as i32)),
        name: Set(upload.name),
        tool: Set(upload.tool),
        path: Set(path.display().to_string()),
        size_bytes: Set(size as i64),
        sha256: Set(sha256),
        created_at_ms: Set(now_ms),
        ..Default::default()
    }
    .insert(txn)
    .await?;
    Ok(())
}

/// Artifact names are file names: letters, digits, `.`, `_`, `-`.
pub fn valid_artifact_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

impl Agent {
    pub(crate) fn artifacts_dir(&self, run_id: &str) -> PathBuf {
        self.core
            .config()
            .data_dir
            .join("runs")
            .join(run_id)
            .join("artifacts")
    }

    /// `artifact`, the file half: checks the upload and writes (and syncs)
    /// the body to a temporary file beside its final name; the writer
    /// moves it into place with its row ([`super::writer::AgentWriter::artifact_row`]),
    /// after checking again that the stage attempt is still the current
    /// one. Uploads are taken only for the run's current stage and attempt
    /// (409 otherwise: a finished stage's evidence is never rewritten), at
    /// most [`evidence::artifact_cap`] per stage attempt.
    pub async fn write_artifact_file(
        &self,
        request: &AuthenticatedRun,
        upload: ArtifactQuery,
        body: &[u8],
    ) -> Result<ArtifactFile> {
        let run = request.row(Endpoint::Artifact)?;
        if !valid_artifact_name(&upload.name) {
            return Err(OrchestratorError::BadRequest(format!(
                "artifact name `{}` must be 1-128 letters, digits, '.', '_' or '-'",
                upload.name.chars().take(160).collect::<String>()
            )));
        }
        if let Some(tool) = &upload.tool
            && Tool::from_name(tool).is_none()
        {
            return Err(OrchestratorError::BadRequest(format!(
                "artifact tool `{}` is not a known tool",
                tool.chars().take(64).collect::<String>()
            )));
        }
        let (Some(stage), Some(attempt)) = (upload.stage, upload.attempt) else {
            return Err(OrchestratorError::BadRequest(
                "an artifact names the stage and attempt it belongs to".into(),
            ));
        };
        if attempt == 0 || attempt > i32::MAX as u32 {
            return Err(OrchestratorError::BadRequest(format!(
                "attempt {attempt} is out of range"
            )));
        }
        let reference = StageRef { stage, attempt };
        check_current(run, reference)?;
        let others = artifact::Entity::find()
            .filter(artifact::Column::RunId.eq(run.id.as_str()))
            .filter(artifact::Column::Stage.eq(stage.as_str()))
            .filter(artifact::Column::Attempt.eq(attempt as i32))
            .filter(artifact::Column::Name.ne(upload.name.as_str()))
            .count(self.core.store().db())
            .await
            .map_err(db("counting a stage's artifacts"))?;
        // the host's disks are read only when the base allowance is used up
        let cap = if (others as usize) < evidence::ARTIFACTS_PER_STAGE {
            evidence::ARTIFACTS_PER_STAGE
        } else {
            evidence::artifact_cap(self.allowlisted_disks(run).await?)
        };
        if others as usize >= cap {
            return Err(OrchestratorError::BadRequest(format!(
                "{stage} attempt {attempt} already has {others} artifacts; at most {cap} are taken"
            )));
        }
        let dir = self
            .artifacts_dir(&run.id)
            .join(format!("{}-{attempt}", stage.as_str()));
        let path = dir.join(&upload.name);
        let temporary = dir.join(format!(".{}.part", uuid::Uuid::new_v4().simple()));
        let sha256 = hex::encode(Sha256::digest(body));
        let size = body.len() as u64;
        let run_id = run.id.clone();
        {
            let temporary = temporary.clone();
            let body = body.to_vec();
            tokio::task::spawn_blocking(move || -> std::io::Result<()> {
                std::fs::create_dir_all(&dir)?;
                std::fs::write(&temporary, &body)?;
                std::fs::File::open(&temporary)?.sync_all()
            })
            .await
            .map_err(internal)?
            .map_err(|source| OrchestratorError::Io {
                doing: format!("storing artifact {}", upload.name),
                source,
            })?;
        }
        Ok(ArtifactFile {
            run_id,
            upload,
            stage: reference,
            temporary,
            path,
            size,
            sha256,
        })
    }
}
