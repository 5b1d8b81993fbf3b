//! The `hcpipe` binary: run the command line, and turn its error (if any)
//! into a message and an exit code — the one place exit codes are chosen
//! (`hcpipe::Error::exit_code`).

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
