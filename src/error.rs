//! herd's one error type. Each variant means something to the caller, and every message
//! names the file, key, address or peer at fault.

use std::path::PathBuf;

/// The result type of the herd library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration or the command line is wrong (exit code 2).
    #[error("{source_name}: {message}")]
    Config {
        source_name: String,
        message: String,
    },
    /// The store cannot be used as it is (exit code 2 when it is too new).
    #[error("store {}: {message}", path.display())]
    Store { path: PathBuf, message: String },
    /// The store was written by a newer herd (exit code 2).
    #[error("store {}: {message}", path.display())]
    StoreTooNew { path: PathBuf, message: String },
    /// The store's files could not be read or written (permissions, a full disk, too many open
    /// files). Never a reason to move the store aside: the node stops with the store untouched.
    #[error("store {}: cannot {doing}: {source} (os error {})", path.display(), source.raw_os_error().unwrap_or(0))]
    StoreIo {
        path: PathBuf,
        doing: String,
        source: std::io::Error,
    },
    /// The store is held by a running node.
    #[error("store {} is in use by a running node (stop it first, or inspect a copy)", path.display())]
    StoreLocked { path: PathBuf },
    /// A state or log path a node refuses to use: a directory others may write to, or a
    /// symbolic link where the store, the lock or the log should be (exit code 2).
    #[error("{}: {message}", path.display())]
    UnsafePath { path: PathBuf, message: String },
    /// A file given to read is malformed: a backup cut short, a line that is not a record.
    #[error("{}: {message}", path.display())]
    Data { path: PathBuf, message: String },
    /// An address could not be bound or resolved.
    #[error("address {addr}: {message}")]
    Address { addr: String, message: String },
    /// Any other I/O failure, with what was being done.
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
}

impl Error {
    pub fn config(source_name: &str, message: impl Into<String>) -> Error {
        Error::Config {
            source_name: source_name.to_owned(),
            message: message.into(),
        }
    }

    pub fn store(path: impl Into<PathBuf>, message: impl std::fmt::Display) -> Error {
        Error::Store {
            path: path.into(),
            message: message.to_string(),
        }
    }

    pub fn io(context: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// The process exit code this error calls for: 2 for bad usage, config or a store this
    /// build cannot use; 1 for anything else.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Config { .. }
            | Error::Address { .. }
            | Error::StoreTooNew { .. }
            | Error::UnsafePath { .. } => 2,
            _ => 1,
        }
    }
}
