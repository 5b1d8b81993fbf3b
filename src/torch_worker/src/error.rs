//! Error plumbing: the worker reports [`hcpipe::ops::OpError`]s, like native ops.
//!
//! tch's fallible calls return `TchError`; [`TchContext::context`] turns one
//! into an `OpError` that says what the worker was doing.

use hcpipe::ops::OpError;

pub type Result<T> = std::result::Result<T, OpError>;

/// Adds "what we were doing" to a tch error.
pub trait TchContext<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> TchContext<T> for std::result::Result<T, tch::TchError> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| OpError::Msg(format!("{}: {e}", what())))
    }
}

/// Shorthand for a one-off message.
pub fn msg(text: impl Into<String>) -> OpError {
    OpError::Msg(text.into())
}
