//! Placeholder: the torch worker lands with the learning stages.
fn main() {
    eprintln!("hcpipe-torch: not built yet");
    std::process::exit(2);
}
