//! Errors of `tunnel-server pki`: each says which file or option is wrong and what to do,
//! and maps to the process exit code.

use std::path::{Path, PathBuf};

/// Why a PKI command failed.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// The command line asks for something invalid (an unsafe file name, a malformed serial
    /// or IP address, an out-of-range number of days). Exit code 64.
    #[error("{0}")]
    Usage(String),
    /// A file of the CA directory cannot be read, written or used. Exit code 74.
    #[error("{}: {message}", path.display())]
    File {
        /// The file concerned.
        path: PathBuf,
        /// What is wrong and what to do about it.
        message: String,
    },
    /// OpenSSL failed to build or sign something. Exit code 1.
    #[error("{what}: {err}")]
    Crypto {
        /// What was being done.
        what: String,
        /// OpenSSL's error queue.
        err: openssl::error::ErrorStack,
    },
}

impl PkiError {
    /// The process exit status for this error: usage (64) for bad usage, I/O error (74) for
    /// a file of the CA directory, failure (1) for OpenSSL failures.
    pub fn exit(&self) -> crate::Exit {
        match self {
            PkiError::Usage(_) => crate::Exit::Usage,
            PkiError::File { .. } => crate::Exit::IoError,
            PkiError::Crypto { .. } => crate::Exit::Failure,
        }
    }

    /// The numeric exit code of [`PkiError::exit`].
    pub fn exit_code(&self) -> i32 {
        self.exit().code()
    }

    pub(crate) fn usage(message: impl Into<String>) -> PkiError {
        PkiError::Usage(message.into())
    }

    pub(crate) fn file(path: &Path, message: impl Into<String>) -> PkiError {
        PkiError::File {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }

    pub(crate) fn crypto(
        what: impl Into<String>,
    ) -> impl FnOnce(openssl::error::ErrorStack) -> PkiError {
        let what = what.into();
        move |err| PkiError::Crypto { what, err }
    }
}
