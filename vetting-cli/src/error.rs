//! What a command's failure is, and the documented exit code it leaves
//! (docs/operator-api.md: the status → exit code table).

/// The exit codes of `vetting`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Success = 0,
    /// A run failed, is held or was cancelled (`runs watch`).
    RunNotCompleted = 1,
    /// Usage or input error (clap's usage errors exit 2 too).
    Input = 2,
    /// Cannot reach the database or the server.
    Unreachable = 3,
    /// Refused: authentication, role, or a state that does not allow it.
    Refused = 4,
    Internal = 5,
}

impl Exit {
    /// The exit code of an operator API answer's status.
    pub fn of_status(status: u16) -> Exit {
        match status {
            200..=299 => Exit::Success,
            401 | 403 | 409 => Exit::Refused,
            400..=499 => Exit::Input,
            _ => Exit::Internal,
        }
    }

    pub fn code(self) -> u8 {
        self as u8
    }
}

/// A command that did not succeed: the message for stderr and the exit
/// code.
#[derive(Debug)]
pub struct Failure {
    pub exit: Exit,
    pub message: String,
}

impl Failure {
    pub fn new(exit: Exit, message: impl Into<String>) -> Failure {
        Failure {
            exit,
            message: message.into(),
        }
    }

    pub fn input(message: impl Into<String>) -> Failure {
        Failure::new(Exit::Input, message)
    }

    pub fn unreachable(message: impl Into<String>) -> Failure {
        Failure::new(Exit::Unreachable, message)
    }

    pub fn internal(message: impl Into<String>) -> Failure {
        Failure::new(Exit::Internal, message)
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl Failure {
    /// A local error (a config file, say) with its whole chain.
    pub fn of_error(exit: Exit, error: &dyn std::error::Error) -> Failure {
        Failure::new(exit, vetting_core::error::chain(error))
    }
}

pub type CliResult<T> = Result<T, Failure>;
