//! The `hcpipe` binary: run the command line, and turn its error (if any)
//! into a message and an exit code — the one place exit codes are chosen
//! (`hcpipe::Error::exit_code`).

/// mimalloc rather than glibc's malloc: planning and settling a pipeline
/// allocate and free a few small strings and maps per stage, and at 100,000
/// stages glibc's free lists (`malloc_consolidate`, `unlink_chunk`) were a
/// fifth of a no-op run (BENCHMARKS.md, "Scale").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    // A stage's launcher (see exec::job::spawn_logged): becomes the stage's command.
    if let Some(code) = hcpipe::exec::job::stage_child() {
        std::process::exit(code);
    }
    let code = match hcpipe::cli::main() {
        Ok(()) => 0,
        Err(e) => {
            e.print();
            e.exit_code()
        }
    };
    std::process::exit(code);
}
