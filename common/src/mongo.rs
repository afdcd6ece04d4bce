//! MongoDB helpers the services share.

/// Server error code of a unique-index violation.
pub const DUPLICATE_KEY: i32 = 11000;

/// The per-document failures of an unordered `insert_many`, when that is all that failed
/// (no write-concern error, no network or server error): the documents not listed were
/// inserted. `None` for any other failure.
pub fn insert_many_write_errors(
    error: &mongodb::error::Error,
) -> Option<&[mongodb::error::IndexedWriteError]> {
    match error.kind.as_ref() {
        mongodb::error::ErrorKind::InsertMany(failure) if failure.write_concern_error.is_none() => {
            failure.write_errors.as_deref()
        }
        _ => None,
    }
}

/// Whether a single-document write failed on a unique index.
pub fn is_duplicate_key(error: &mongodb::error::Error) -> bool {
    use mongodb::error::{ErrorKind, WriteFailure};
    matches!(
        error.kind.as_ref(),
        ErrorKind::Write(WriteFailure::WriteError(e)) if e.code == DUPLICATE_KEY
    )
}
