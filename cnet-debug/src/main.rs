//! cnet-debug: explain the path to an IP.
fn main() {}
