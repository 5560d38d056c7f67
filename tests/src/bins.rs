//! Locating the product binaries: `cargo build -p tunnel-server -p tunnel-client` once per test
//! process (with the profile the tests were built with), then the binaries next to the test
//! executable (`target/<profile>/deps/<test>` → `target/<profile>/`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Path of the `tunnel-server` binary.
pub fn server() -> PathBuf {
    dir().join("tunnel-server")
}

/// Path of the `tunnel-client` binary.
pub fn client() -> PathBuf {
    dir().join("tunnel-client")
}

fn dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(build)
}

fn build() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let mut dir = exe
        .parent()
        .expect("test executable has a parent")
        .to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    // `target/debug` is the dev (and test) profile; any other directory is named after its
    // profile, so the binaries are built the same way as the tests.
    let profile = dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("debug")
        .to_string();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives in the workspace");
    let mut cmd = Command::new(&cargo);
    cmd.current_dir(workspace).args([
        "build",
        "--quiet",
        "-p",
        "tunnel-server",
        "-p",
        "tunnel-client",
    ]);
    if profile != "debug" {
        cmd.args(["--profile", &profile]);
    }
    // The vendored-OpenSSL stage (scripts/test-vendored) tests binaries of that build.
    if cfg!(feature = "vendored-openssl") {
        cmd.args(["--features", "tunnel-core/vendored-openssl"]);
    }
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cargo:?} to build the binaries: {e}"));
    assert!(
        out.status.success(),
        "building tunnel-server and tunnel-client failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    for name in ["tunnel-server", "tunnel-client"] {
        assert!(
            dir.join(name).is_file(),
            "{name} not found in {} after cargo build",
            dir.display()
        );
    }
    dir
}
