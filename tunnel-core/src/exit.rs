//! How a process ends: its exit status ([`Exit`]) and the errors that stop an agent from
//! starting ([`StartError`]), each mapped to its status in one place.

use crate::config::ConfigError;
use crate::pki::PkiError;
use crate::revocation::crl_fetch::FetchError;
use crate::service::BindError;
use std::process::ExitCode;

/// Exit code for bad usage or configuration (BSD `EX_USAGE`).
pub const EXIT_CONFIG: i32 = 64;
/// Exit code for a runtime failure that no other code describes.
pub const EXIT_RUNTIME: i32 = 1;
/// Exit code when a needed service is unavailable: an address cannot be listened on
/// (BSD `EX_UNAVAILABLE`).
pub const EXIT_UNAVAILABLE: i32 = 69;
/// Exit code for an I/O error on a file the command works on (BSD `EX_IOERR`).
pub const EXIT_IOERR: i32 = 74;
/// Exit code after a panic: an internal error (BSD `EX_SOFTWARE`).
pub const EXIT_PANIC: i32 = 70;
/// Exit code when the admin socket refuses the caller (BSD `EX_NOPERM`).
pub(crate) const EXIT_NOPERM: i32 = 77;

/// The exit status of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Everything went as asked (0).
    Success,
    /// A runtime failure no other status describes: a gateway unreachable, a demo check
    /// failed... ([`EXIT_RUNTIME`]).
    Failure,
    /// Bad usage or configuration ([`EXIT_CONFIG`]).
    Usage,
    /// An address cannot be listened on: in use, not permitted ([`EXIT_UNAVAILABLE`]).
    Unavailable,
    /// A file the command works on cannot be read or written ([`EXIT_IOERR`]).
    IoError,
}

impl Exit {
    /// The numeric status.
    pub fn code(self) -> i32 {
        match self {
            Exit::Success => 0,
            Exit::Failure => EXIT_RUNTIME,
            Exit::Usage => EXIT_CONFIG,
            Exit::Unavailable => EXIT_UNAVAILABLE,
            Exit::IoError => EXIT_IOERR,
        }
    }
}

impl Exit {
    /// The status for a numeric exit code (any other failure code is [`Exit::Failure`]).
    pub fn from_code(code: i32) -> Exit {
        match code {
            0 => Exit::Success,
            EXIT_CONFIG => Exit::Usage,
            EXIT_UNAVAILABLE => Exit::Unavailable,
            EXIT_IOERR => Exit::IoError,
            _ => Exit::Failure,
        }
    }
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> ExitCode {
        ExitCode::from(e.code() as u8)
    }
}

/// Why a command or an agent could not run.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The command line asks for something impossible.
    #[error("{0}")]
    Usage(String),
    /// A listen address cannot be bound.
    #[error(transparent)]
    Bind(#[from] BindError),
    /// Another address cannot be listened on (the metrics endpoint, the admin socket).
    #[error("{0}")]
    Unavailable(String),
    /// Something the process needs is unavailable (runtime, signal handlers, socket
    /// activation...).
    #[error("{0}")]
    Runtime(String),
    /// A CRL URL cannot be fetched and no earlier copy is kept.
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// A `pki` command failed.
    #[error("tunnel-server pki {command}: {source}")]
    Pki {
        /// The subcommand.
        command: &'static str,
        /// What went wrong.
        source: PkiError,
    },
}

impl StartError {
    /// A runtime failure described by `what` and its cause.
    pub fn runtime(what: &str, cause: impl std::fmt::Display) -> StartError {
        StartError::Runtime(format!("{what}: {cause}"))
    }

    /// The exit status this error ends the process with.
    pub fn exit(&self) -> Exit {
        match self {
            StartError::Config(_) | StartError::Usage(_) | StartError::Fetch(_) => Exit::Usage,
            StartError::Bind(_) | StartError::Unavailable(_) => Exit::Unavailable,
            StartError::Runtime(_) => Exit::Failure,
            StartError::Pki { source, .. } => source.exit(),
        }
    }

    /// Logs and prints the error, and returns the exit status for it.
    pub fn report(&self) -> ExitCode {
        tracing::error!("{self}");
        eprintln!("{self}");
        self.exit().into()
    }
}

impl From<StartError> for Exit {
    fn from(e: StartError) -> Exit {
        e.exit()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn each_error_maps_to_its_exit_status() {
        let bind = BindError {
            file: PathBuf::from("s.toml"),
            key: "listen".into(),
            addr: "127.0.0.1:1".parse().unwrap(),
            source: std::io::Error::from(std::io::ErrorKind::AddrInUse),
        };
        let cases: Vec<(StartError, i32)> = vec![
            (
                ConfigError::new(std::path::Path::new("s.toml"), "listen", "bad").into(),
                64,
            ),
            (StartError::Usage("--config FILE is required".into()), 64),
            (bind.into(), 69),
            (StartError::Unavailable("metrics: in use".into()), 69),
            (StartError::runtime("socket activation", "EBADF"), 1),
            (
                FetchError::Status {
                    url: "http://ca.example/ca.crl".into(),
                    status: 404,
                }
                .into(),
                64,
            ),
            (
                StartError::Pki {
                    command: "init",
                    source: PkiError::Usage("x".into()),
                },
                64,
            ),
            (
                StartError::Pki {
                    command: "crl",
                    source: PkiError::File {
                        path: "ca.key".into(),
                        message: "gone".into(),
                    },
                },
                74,
            ),
        ];
        for (e, code) in cases {
            assert_eq!(e.exit().code(), code, "{e}");
            assert_eq!(Exit::from(e).code(), code);
        }
        assert_eq!(Exit::Success.code(), 0);
        for e in [
            Exit::Success,
            Exit::Failure,
            Exit::Usage,
            Exit::Unavailable,
            Exit::IoError,
        ] {
            assert_eq!(Exit::from_code(e.code()), e);
        }
    }
}
