//! MongoDB helpers the services share.

/// Server error code of a unique-index violation.
pub const DUPLICATE_KEY: i32 = 11000;

/// Whether a single-document write failed on a unique index.
pub fn is_duplicate_key(error: &mongodb::error::Error) -> bool {
    use mongodb::error::{ErrorKind, WriteFailure};
    matches!(
        error.kind.as_ref(),
        ErrorKind::Write(WriteFailure::WriteError(e)) if e.code == DUPLICATE_KEY
    )
}
