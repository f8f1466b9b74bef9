//! The `lwmq` command-line tool.

fn main() -> anyhow::Result<()> {
    println!("lwmq {}", env!("CARGO_PKG_VERSION"));
    Ok(())
}
