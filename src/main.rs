fn main() {
    std::process::exit(hcpipe::cli::main());
}
