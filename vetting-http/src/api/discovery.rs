//! The serve lock and the discovery files of a data folder: `vetting
//! serve` holds an exclusive `flock` on `DATA/serve.lock` while it runs
//! and writes `DATA/serve.json` (`{"url", "pid"}`) and
//! `DATA/cli-admin.token` (0600, an admin token named `local-cli`, made
//! anew at each start). [`discover`] is how the CLI tells whether a server
//! holds the folder: the lock's state is the truth, the files only say
//! where and how to reach it.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

/// The lock file's name in the data folder.
pub const SERVE_LOCK: &str = "serve.lock";
/// Where a running server says where it listens.
pub const SERVE_JSON: &str = "serve.json";
/// The running server's admin token for the local CLI (mode 0600).
pub const CLI_TOKEN_FILE: &str = "cli-admin.token";
/// The prefix of that token's name.
pub const CLI_TOKEN_NAME: &str = "local-cli";

/// The local CLI token's name for a server on `data_dir`:
/// `local-cli.` and 12 hex digits of the SHA-256 of this machine's name
/// and the data folder, so that servers sharing one PostgreSQL (each with
/// its own data folder) do not revoke each other's token at start.
pub fn cli_token_name(data_dir: &Path) -> String {
    use sha2::Digest;
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let folder = std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    let mut digest = sha2::Sha256::new();
    digest.update(host.trim().as_bytes());
    digest.update(b"\0");
    digest.update(folder.as_os_str().as_encoded_bytes());
    let hex = hex::encode(digest.finalize());
    format!("{CLI_TOKEN_NAME}.{}", &hex[..12])
}

/// Why the lock or the discovery files could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ServeLockError {
    #[error(
        "another `vetting serve` (pid {pid}) holds {}: one server per data folder",
        path.display()
    )]
    Held { path: PathBuf, pid: String },
    #[error("a `vetting serve` holds {}, but {what}", lock.display())]
    Unreadable { lock: PathBuf, what: String },
    #[error("I/O error while {doing} {}", path.display())]
    Io {
        doing: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What `serve.json` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServeInfo {
    pub url: String,
    pub pid: u32,
}

/// How to reach the server that holds a data folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovered {
    /// `http://ADDR`.
    pub url: String,
    /// An admin API token (`vtk1...`).
    pub token: String,
    pub pid: u32,
}

/// The exclusive lock of a serving process; released when dropped.
#[derive(Debug)]
pub struct ServeLock {
    data_dir: PathBuf,
    _lock: Flock<File>,
}

impl ServeLock {
    /// Takes the exclusive lock of `data_dir` (made if missing), or says
    /// which process holds it.
    pub fn acquire(data_dir: &Path) -> Result<ServeLock, ServeLockError> {
        let path = data_dir.join(SERVE_LOCK);
        std::fs::create_dir_all(data_dir).map_err(|source| ServeLockError::Io {
            doing: "creating the data folder",
            path: data_dir.to_path_buf(),
            source,
        })?;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .open(&path)
            .map_err(|source| ServeLockError::Io {
                doing: "opening",
                path: path.clone(),
                source,
            })?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Ok(ServeLock {
                data_dir: data_dir.to_path_buf(),
                _lock: lock,
            }),
            Err((_, Errno::EWOULDBLOCK)) => Err(ServeLockError::Held {
                pid: read_info(data_dir)
                    .map_or_else(|| "unknown".to_string(), |info| info.pid.to_string()),
                path,
            }),
            Err((_, errno)) => Err(ServeLockError::Io {
                doing: "locking",
                path,
                source: std::io::Error::from(errno),
            }),
        }
    }

    /// Writes `serve.json` and the CLI's token file, each atomically (the
    /// token file 0600 from its creation).
    pub fn publish(&self, url: &str, token: &str) -> Result<(), ServeLockError> {
        let info = ServeInfo {
            url: url.to_string(),
            pid: std::process::id(),
        };
        let json = serde_json::to_string(&info).unwrap_or_default();
        write_atomically(&self.data_dir.join(CLI_TOKEN_FILE), token.as_bytes(), 0o600)?;
        write_atomically(&self.data_dir.join(SERVE_JSON), json.as_bytes(), 0o644)
    }

    /// Removes `serve.json` (a clean shutdown); the token file stays
    /// (its token is revoked at the next start).
    pub fn withdraw(&self) {
        let path = self.data_dir.join(SERVE_JSON);
        if let Err(error) = std::fs::remove_file(&path)
            && error.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(file = %path.display(), %error, "cannot remove the discovery file");
        }
    }
}

fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> Result<(), ServeLockError> {
    let temporary = path.with_extension(format!("tmp.{}", std::process::id()));
    let io = |doing: &'static str, at: &Path| {
        let at = at.to_path_buf();
        move |source| ServeLockError::Io {
            doing,
            path: at,
            source,
        }
    };
    let _ = std::fs::remove_file(&temporary);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&temporary)
        .map_err(io("creating", &temporary))?;
    file.write_all(bytes).map_err(io("writing", &temporary))?;
    file.sync_all().map_err(io("syncing", &temporary))?;
    std::fs::rename(&temporary, path).map_err(io("renaming over", path))
}

fn read_info(data_dir: &Path) -> Option<ServeInfo> {
    let text = std::fs::read_to_string(data_dir.join(SERVE_JSON)).ok()?;
    serde_json::from_str(&text).ok()
}

/// Whether a server holds `data_dir`, and how to reach it: `Ok(None)`
/// when nobody holds the lock (the CLI opens the database itself),
/// `Ok(Some)` when a server does, `Err` when one does but its discovery
/// files cannot be read (not written yet, or not readable by this user):
/// the caller must then not open the database either.
pub fn discover(data_dir: &Path) -> Result<Option<Discovered>, ServeLockError> {
    let lock = data_dir.join(SERVE_LOCK);
    let file = match File::open(&lock) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(ServeLockError::Io {
                doing: "opening",
                path: lock,
                source,
            });
        }
    };
    match Flock::lock(file, FlockArg::LockSharedNonblock) {
        // nobody serves: the lock is dropped (released) at once
        Ok(_free) => Ok(None),
        Err((_, Errno::EWOULDBLOCK)) => {
            let unreadable = |what: String| ServeLockError::Unreadable {
                lock: lock.clone(),
                what,
            };
            let info = read_info(data_dir)
                .ok_or_else(|| unreadable(format!("its {SERVE_JSON} cannot be read")))?;
            let token = std::fs::read_to_string(data_dir.join(CLI_TOKEN_FILE))
                .map_err(|error| {
                    unreadable(format!("its {CLI_TOKEN_FILE} cannot be read: {error}"))
                })?
                .trim()
                .to_string();
            Ok(Some(Discovered {
                url: info.url,
                token,
                pid: info.pid,
            }))
        }
        Err((_, errno)) => Err(ServeLockError::Io {
            doing: "locking",
            path: lock,
            source: std::io::Error::from(errno),
        }),
    }
}
