//! `tunnel-client exec BACKEND -- COMMAND [ARGS…]`: one tunnel on a free loopback port for as
//! long as a command runs. The command finds the tunnel in `TUNNEL_HOST`/`TUNNEL_PORT` and in
//! `{host}`/`{port}` in its arguments; signals sent to the agent go on to the command (the
//! agent does not stop on them: the command decides); when the command exits the tunnel
//! closes and the agent exits with the command's status.

use crate::agent::{self, ClientAgent};
use crate::config::ClientConfig;
use crate::exit::StartError;
use crate::metrics::Metrics;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::net::SocketAddr;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::Arc;
use tokio::process::{Child, Command};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, oneshot};

/// Exit status when the command is not found (as a shell says it).
pub const EXIT_NOT_FOUND: i32 = 127;
/// Exit status when the command exists but cannot be started (as a shell says it).
pub const EXIT_CANNOT_RUN: i32 = 126;

/// What `exec` prints in `--help` and the README about its exit statuses.
pub const EXIT_HELP: &str = "\
Exit status: the command's own status once it ran (128+N when signal N ended it). Before it
runs, the agent's own: 64 bad usage or configuration, 69 no loopback port to listen on,
1 the gateway is unreachable, the certificate expired or BACKEND is not in your catalog,
126 the command cannot be run, 127 the command is not found.";

/// The signals passed on to the command. SIGINT included: a script's `kill -INT` reaches the
/// command; at a terminal, Ctrl-C reaches it directly too (same process group).
const FORWARDED: [(SignalKind, Signal); 5] = [
    (SignalKind::interrupt(), Signal::SIGINT),
    (SignalKind::terminate(), Signal::SIGTERM),
    (SignalKind::hangup(), Signal::SIGHUP),
    (SignalKind::quit(), Signal::SIGQUIT),
    (SignalKind::user_defined1(), Signal::SIGUSR1),
];

/// Why `exec` could not run the command.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The agent could not start (configuration, listening).
    #[error(transparent)]
    Start(#[from] StartError),
    /// The command could not be started.
    #[error("tunnel-client exec: cannot run {program:?}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        source: std::io::Error,
    },
}

impl ExecError {
    /// The exit status for this failure.
    pub fn code(&self) -> i32 {
        match self {
            ExecError::Start(e) => e.exit().code(),
            ExecError::Spawn { source, .. } => match source.kind() {
                std::io::ErrorKind::NotFound => EXIT_NOT_FOUND,
                _ => EXIT_CANNOT_RUN,
            },
        }
    }
}

/// `argv` with `{host}` and `{port}` replaced by the tunnel's address.
pub fn substitute(argv: &[String], addr: SocketAddr) -> Vec<String> {
    let (host, port) = (addr.ip().to_string(), addr.port().to_string());
    argv.iter()
        .map(|a| a.replace("{host}", &host).replace("{port}", &port))
        .collect()
}

/// The exit status a shell would report for `status`: the code, or 128+N for signal N.
pub fn status_code(status: ExitStatus) -> i32 {
    match (status.code(), status.signal()) {
        (Some(c), _) => c,
        (None, Some(sig)) => 128 + sig,
        (None, None) => crate::EXIT_RUNTIME,
    }
}

/// Runs the one tunnel of `cfg` (listening on its `listen`, usually `127.0.0.1:0`) and
/// `argv` beside it; returns the command's exit status.
pub async fn run(cfg: ClientConfig, argv: Vec<String>) -> Result<i32, ExecError> {
    let agent =
        ClientAgent::new(cfg.clone(), Arc::new(Metrics::new())).map_err(StartError::from)?;
    let listeners = agent::bind_all(&cfg).await.map_err(StartError::from)?;
    let addr = agent::local_addrs(&listeners)
        .first()
        .copied()
        .ok_or_else(|| StartError::Usage("tunnel-client exec: no tunnel to open".into()))?;
    // Installed before the command starts, so no signal meant for it ends the agent instead.
    let mut signals = listen_for_signals()?;
    let (stop, stopped) = oneshot::channel::<()>();
    let serving = tokio::spawn(agent.serve(listeners, async {
        let _ = stopped.await;
    }));
    let child = spawn(&argv, addr);
    let status = match child {
        Ok(child) => Ok(wait_forwarding(child, &mut signals).await),
        Err(e) => Err(e),
    };
    // The command is gone: close the tunnel (open connections drain up to shutdown_timeout).
    let _ = stop.send(());
    let _ = serving.await;
    status
}

/// Starts `argv` with the tunnel's address in its environment and arguments.
fn spawn(argv: &[String], addr: SocketAddr) -> Result<Child, ExecError> {
    let argv = substitute(argv, addr);
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| StartError::Usage("tunnel-client exec: COMMAND is required".into()))?;
    Command::new(program)
        .args(args)
        .env("TUNNEL_HOST", addr.ip().to_string())
        .env("TUNNEL_PORT", addr.port().to_string())
        .spawn()
        .map_err(|source| ExecError::Spawn {
            program: program.clone(),
            source,
        })
}

/// One channel for every signal of [`FORWARDED`] the agent receives.
fn listen_for_signals() -> Result<mpsc::UnboundedReceiver<Signal>, StartError> {
    let (tx, rx) = mpsc::unbounded_channel();
    for (kind, sig) in FORWARDED {
        let mut s =
            signal(kind).map_err(|e| StartError::runtime("cannot install signal handlers", e))?;
        let tx = tx.clone();
        tokio::spawn(async move {
            while s.recv().await.is_some() {
                if tx.send(sig).is_err() {
                    return;
                }
            }
        });
    }
    Ok(rx)
}

/// Waits for `child`, passing each signal from `signals` on to it; returns its exit status.
async fn wait_forwarding(mut child: Child, signals: &mut mpsc::UnboundedReceiver<Signal>) -> i32 {
    loop {
        tokio::select! {
            status = child.wait() => {
                return status.map(status_code).unwrap_or(crate::EXIT_RUNTIME);
            }
            Some(sig) = signals.recv() => {
                // `id()` is None once the child was reaped, so a reused pid is never signalled.
                if let Some(pid) = child.id() {
                    tracing::debug!(signal = %sig, pid, "passing the signal on to the command");
                    let _ = kill(Pid::from_raw(pid as i32), sig);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_become_the_tunnel_address() {
        let addr: SocketAddr = "127.0.0.1:15432".parse().unwrap();
        let argv: Vec<String> = [
            "psql",
            "-h",
            "{host}",
            "-p",
            "{port}",
            "postgres://{host}:{port}/x",
            "{other}",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            substitute(&argv, addr),
            [
                "psql",
                "-h",
                "127.0.0.1",
                "-p",
                "15432",
                "postgres://127.0.0.1:15432/x",
                "{other}"
            ]
        );
    }

    #[test]
    fn a_signal_ending_the_command_reads_as_a_shell_says_it() {
        assert_eq!(status_code(ExitStatus::from_raw(42 << 8)), 42);
        assert_eq!(status_code(ExitStatus::from_raw(0)), 0);
        // Killed by SIGINT (2) / SIGKILL (9): the wait status carries the signal number.
        assert_eq!(status_code(ExitStatus::from_raw(2)), 130);
        assert_eq!(status_code(ExitStatus::from_raw(9)), 137);
    }
}
