//! Records, at build time, what the results must name: the compiler's version and the
//! versions of the contenders' crates (from Cargo.lock).

use std::process::Command;

fn locked_version(lock: &str, name: &str) -> String {
    let needle = format!("name = \"{name}\"\nversion = \"");
    match lock.find(&needle) {
        Some(i) => {
            let rest = &lock[i + needle.len()..];
            rest.split('"').next().unwrap_or("?").to_owned()
        }
        None => "?".to_owned(),
    }
}

fn main() {
    println!("cargo:rerun-if-changed=Cargo.lock");
    println!("cargo:rerun-if-changed=../Cargo.toml");
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let version = Command::new(rustc)
        .arg("-V")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=BENCH_RUSTC_VERSION={version}");
    let lock = std::fs::read_to_string("Cargo.lock").unwrap_or_default();
    for (env, name) in [
        ("ZEROMQ", "zeromq"),
        ("ICEORYX2", "iceoryx2"),
        ("ZMQ", "zmq"),
        ("OMQ", "omq-tokio"),
        ("OMQ_SHM", "omq-shm"),
        ("OMQ_PROTO", "omq-proto"),
    ] {
        println!(
            "cargo:rustc-env=BENCH_DEP_{env}={}",
            locked_version(&lock, name)
        );
    }
    // lwmq's version is the workspace's ([workspace.package] in the root Cargo.toml).
    let root = std::fs::read_to_string("../Cargo.toml").unwrap_or_default();
    let lwmq = root
        .split("[workspace.package]")
        .nth(1)
        .and_then(|s| s.lines().find(|l| l.trim_start().starts_with("version")))
        .and_then(|l| l.split('"').nth(1))
        .unwrap_or("?")
        .to_owned();
    println!("cargo:rustc-env=BENCH_LWMQ_VERSION={lwmq}");
}
