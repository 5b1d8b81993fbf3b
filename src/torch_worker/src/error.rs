//! Error plumbing: the worker reports [`hcpipe::ops::OpError`]s, like native ops.
//!
//! tch's fallible calls return `TchError`; [`TchContext::context`] turns one
//! into an `OpError` that says what the worker was doing; [`shim_result`]
//! does the same for the C++ shim's calls (csrc/fast_step.cpp).

use std::ffi::{c_char, CStr};

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

extern "C" {
    fn hc_free_error(error: *mut c_char);
}

/// Turns the C++ shim's error text (NULL = success) into a Result.
pub(crate) fn shim_result(error: *mut c_char, what: &str) -> Result<()> {
    if error.is_null() {
        return Ok(());
    }
    // SAFETY: a non-NULL return is a NUL-terminated malloc'd string that we
    // own and free exactly once.
    let text = unsafe { CStr::from_ptr(error) }
        .to_string_lossy()
        .into_owned();
    unsafe { hc_free_error(error) };
    Err(msg(format!("{what}: {text}")))
}
