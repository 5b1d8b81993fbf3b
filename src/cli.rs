//! Placeholder until the runner core lands (same session).
pub fn main() -> i32 {
    eprintln!("hcpipe: the runner core is being built");
    2
}
