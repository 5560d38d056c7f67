//! The panic hook ends the process: a panic in a Tokio task is logged as an error event and the
//! process exits with `EXIT_PANIC` instead of carrying on without the task.
//!
//! The test runs its own binary again as the child (selected by an environment variable), so
//! the hook and the exit happen in a real, separate process.

use std::process::Command;
use std::time::Duration;
use tunnel_core::config::LogFormat;
use tunnel_core::service::panic::EXIT_PANIC;

const CHILD: &str = "TUNNEL_PANIC_HOOK_CHILD";

#[test]
fn a_panicking_task_is_logged_and_ends_the_process() {
    if std::env::var_os(CHILD).is_some() {
        child();
    }
    let exe = std::env::current_exe().expect("current_exe");
    let out = Command::new(exe)
        .args([
            "--exact",
            "a_panicking_task_is_logged_and_ends_the_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .env("RUST_LOG", "info")
        .output()
        .expect("run the child");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(EXIT_PANIC),
        "the child should exit {EXIT_PANIC}; stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let ev = stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|e| e["target"] == "panic")
        .unwrap_or_else(|| panic!("no panic event in the child's log:\n{stderr}"));
    assert_eq!(ev["level"], "ERROR", "{ev}");
    assert_eq!(ev["panic"], "boom in a task", "{ev}");
    assert!(
        ev["location"]
            .as_str()
            .unwrap_or("")
            .contains("panic_hook.rs"),
        "{ev}"
    );
    assert!(
        !stdout.contains("still running"),
        "the process carried on after the panic:\n{stdout}"
    );
}

/// The child: JSON logs, the hook, a runtime whose task panics, then a line that must never be
/// printed because the process is gone.
fn child() -> ! {
    tunnel_core::service::logging::init(LogFormat::Json, Some("info"));
    tunnel_core::service::panic::install();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let task = tokio::spawn(async { panic!("boom in a task") });
        let _ = task.await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    });
    println!("still running");
    std::process::exit(0);
}
