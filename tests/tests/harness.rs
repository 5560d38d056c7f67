//! The harness's teardown checks: dropping a process that exited early, or that logged a
//! panic, fails the test; an expected exit does not.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::process::Command;
use tunnel_tests::process::{command, Proc};
use tunnel_tests::*;

/// The message of the panic `f` raises (None when it does not panic).
fn panic_of(f: impl FnOnce()) -> Option<String> {
    let err = catch_unwind(AssertUnwindSafe(f)).err()?;
    err.downcast_ref::<String>()
        .cloned()
        .or_else(|| err.downcast_ref::<&str>().map(|s| s.to_string()))
}

/// A gateway with a missing config file: exits 64 at once.
fn doomed() -> Proc {
    let mut cmd = command(&bins::server());
    cmd.args(["--config", "/nonexistent/tunnel-harness-test.toml"]);
    let p = Proc::spawn("doomed tunnel-server", cmd);
    // Stderr closes when it has exited.
    let _ = p.try_wait_until(READY, |_| None::<()>);
    p
}

#[test]
fn a_process_that_exited_early_fails_the_test() {
    let msg = panic_of(|| drop(doomed())).expect("teardown must fail the test");
    assert!(msg.contains("exited before the test ended"), "{msg}");
}

#[test]
fn an_expected_exit_passes() {
    let p = doomed();
    p.expect_exit();
    assert_eq!(panic_of(|| drop(p)), None);
    let mut p = doomed();
    assert_eq!(p.wait_exit(READY).code(), Some(64));
    assert_eq!(panic_of(|| drop(p)), None);
}

#[test]
fn a_logged_panic_fails_the_test() {
    let mut cmd = Command::new("sh");
    cmd.args([
        "-c",
        "echo \"thread 'main' panicked at src/x.rs:1:1:\" >&2; exec sleep 60",
    ]);
    let p = Proc::spawn("panicking process", cmd);
    p.wait_until("the panic line", READY, |evs| {
        (!evs.is_empty()).then_some(())
    });
    let msg = panic_of(|| drop(p)).expect("teardown must fail the test");
    assert!(msg.contains("logged a panic"), "{msg}");
}
