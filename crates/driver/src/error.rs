//! The driver interface's error type. Its variants are classes (not found, already exists,
//! invalid argument, wrong state, ...) so that every front end maps them to its own codes in one
//! place: exit codes for the CLI, gRPC codes for CRI, `Status` reasons for the API server.

use strata_oci::network::NetworkError;
use strata_oci::RuntimeError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no such container: {0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    InvalidArgument(String),
    /// The workload is in the wrong state for the request.
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("not supported: {0}")]
    Unsupported(String),
    #[error("timed out waiting for {0}")]
    Timeout(String),
    /// Something the workload may offer does not answer (a VM's guest agent).
    #[error("{0}")]
    Unavailable(String),
    #[error(transparent)]
    Image(#[from] strata_image::Error),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Network(#[from] NetworkError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Internal(String),
}

impl Error {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let context = context.into();
        move |source| Error::Io { context, source }
    }
}
