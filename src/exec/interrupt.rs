//! Ctrl-C (and SIGTERM) for `hcpipe run`: the first one sets a flag the
//! scheduler checks between outcomes, so it cancels what is in flight
//! (`scancel` for Slurm jobs) and writes the run record; a second one exits
//! at once.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

static REQUESTED: AtomicBool = AtomicBool::new(false);

/// Install the handler (once per process; later calls are no-ops).
pub fn install() {
    let result = ctrlc::set_handler(|| {
        if REQUESTED.swap(true, Ordering::SeqCst) {
            // Second signal: the user insists. The stages' process groups go
            // too (a stage's own children have no parent-death signal); the
            // run record, left `running`, reads `interrupted` once this
            // process is gone (see `record`).
            super::job::kill_running();
            std::process::exit(130);
        }
        let _ = writeln!(
            std::io::stderr(),
            "\ninterrupted: stopping (press Ctrl-C again to quit at once)"
        );
    });
    if let Err(e) = result {
        tracing::debug!("Ctrl-C handler not installed: {e}");
    }
}

/// Whether the run was asked to stop.
pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}
