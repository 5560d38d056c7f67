//! The process-wide panic hook: a panic anywhere (the main thread or any Tokio task) is logged
//! as an error event and ends the process with [`EXIT_PANIC`].
//!
//! Without it Tokio catches a panicking task and the rest of the process carries on: a
//! connection or a background job (CRL watcher, OCSP refresher, metrics) disappears and the
//! only trace is a line on stderr. A gateway in an unknown state should rather stop and let
//! systemd (`Restart=on-failure`) start a clean one.

/// Exit status after a panic (the one exit table: [`crate::exit`]).
pub use crate::exit::EXIT_PANIC;

/// Installs the hook. Call it first thing in `main`; logging may be set up later, the hook
/// checks at panic time whether a subscriber exists.
pub fn install() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if tracing::dispatcher::has_been_set() {
            // The hook's argument type is not named here: its name changed in Rust 1.81.
            let payload = info.payload();
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "(no message)".into());
            let location = info
                .location()
                .map(|l| format!("{}:{}", l.file(), l.line()))
                .unwrap_or_default();
            log(&message, &location);
        } else {
            // No subscriber yet: the standard message (and backtrace) on stderr.
            default(info);
        }
        std::process::exit(EXIT_PANIC);
    }));
}

fn log(message: &str, location: &str) {
    let thread = std::thread::current()
        .name()
        .unwrap_or("unnamed")
        .to_string();
    let backtrace = std::backtrace::Backtrace::capture().to_string();
    tracing::error!(
        target: "panic",
        panic = %message,
        location = %location,
        thread = %thread,
        backtrace = %backtrace,
        "panic: internal error, exiting with status {EXIT_PANIC}; please report it"
    );
}
