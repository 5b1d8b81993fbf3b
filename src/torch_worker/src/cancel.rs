//! Cancelling a served job: the torch server sets a flag when the runner hangs up, and the
//! long loops of the job's thread ask [`check_cancelled`] often.
//!
//! Its own module, below `job` and the ops: `train` asks, `job` sets, and neither imports the
//! other for it.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::error::{msg, Result};

thread_local! {
    /// Set by the torch server when the runner gives up on this thread's job.
    static CANCEL: RefCell<Option<Arc<AtomicBool>>> = const { RefCell::new(None) };
}

/// `flag` is this thread's cancellation flag until the returned guard drops.
pub fn watch(flag: Option<Arc<AtomicBool>>) -> Watching {
    CANCEL.with(|c| *c.borrow_mut() = flag);
    Watching(())
}

/// While it lives, [`check_cancelled`] reads the flag given to [`watch`].
pub struct Watching(());

impl Drop for Watching {
    fn drop(&mut self) {
        CANCEL.with(|c| *c.borrow_mut() = None);
    }
}

/// An error once the runner has cancelled the job running on this thread
/// (only jobs served by `--serve` can be cancelled this way; a job run with
/// `--job` is cancelled by killing its process). Long loops call it often.
pub fn check_cancelled() -> Result<()> {
    let cancelled = CANCEL.with(|c| {
        c.borrow()
            .as_ref()
            .is_some_and(|flag| flag.load(Ordering::Relaxed))
    });
    if cancelled {
        Err(msg("cancelled: the runner stopped waiting for this stage"))
    } else {
        Ok(())
    }
}
