//! Errors of the hub's RPC handlers, and the one place they become a [`tonic::Status`].
//!
//! Handlers return [`ApiError`]; the conversion to `Status` below logs the full error once
//! (with its source chain) and sends the client a message that names the problem without
//! leaking internals (storage errors become a plain "internal error").

use tonic::{Code, Status};

use crate::store::StoreError;

/// Why an RPC was refused or failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// The caller carried no usable identity.
    #[error("unauthenticated: {0}")]
    Unauthenticated(&'static str),
    /// The caller's role or principal may not do this.
    #[error("permission denied: {0}")]
    PermissionDenied(&'static str),
    /// No request has this id.
    #[error("request {0:?} not found")]
    NotFound(String),
    /// A request with this id exists with a different payload.
    #[error("request {0:?} already exists with a different payload")]
    AlreadyExists(String),
    /// The request is malformed.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The request is not in a state that allows this (final, expired).
    #[error("failed precondition: {0}")]
    FailedPrecondition(String),
    /// The storage backend failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ApiError {
    /// The gRPC code for this error.
    #[must_use]
    pub fn code(&self) -> Code {
        match self {
            Self::Unauthenticated(_) => Code::Unauthenticated,
            Self::PermissionDenied(_) => Code::PermissionDenied,
            Self::NotFound(_) => Code::NotFound,
            Self::AlreadyExists(_) => Code::AlreadyExists,
            Self::InvalidArgument(_) => Code::InvalidArgument,
            Self::FailedPrecondition(_) => Code::FailedPrecondition,
            Self::Store(_) => Code::Internal,
        }
    }
}

impl From<ApiError> for Status {
    fn from(err: ApiError) -> Self {
        let code = err.code();
        match &err {
            ApiError::Store(_) => {
                tracing::error!(error = %err, source = ?std::error::Error::source(&err), "rpc failed");
                Status::new(code, "internal error")
            }
            ApiError::Unauthenticated(_)
            | ApiError::PermissionDenied(_)
            | ApiError::NotFound(_)
            | ApiError::AlreadyExists(_)
            | ApiError::InvalidArgument(_)
            | ApiError::FailedPrecondition(_) => {
                // Client mistakes are normal traffic: log them at info, not as failures.
                tracing::info!(error = %err, code = ?code, "rpc refused");
                Status::new(code, err.to_string())
            }
        }
    }
}
