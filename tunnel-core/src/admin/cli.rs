//! The command-line side of the admin socket: send one request, read one reply, and print
//! it as a table (or JSON). Used by `tunnel-server sessions|disconnect` and
//! `tunnel-client status`.

use super::protocol::{self, Request, Response, SessionView, TunnelStatus};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

// The socket cannot be reached: EXIT_UNAVAILABLE; it refuses the caller: EXIT_NOPERM (both
// in the one exit table, crate::exit).
use crate::exit::{EXIT_NOPERM, EXIT_UNAVAILABLE};

/// Why a command failed, and the exit code it maps to.
#[derive(Debug)]
pub struct CliError {
    /// Exit status.
    pub code: i32,
    /// What to print.
    pub message: String,
}

/// Sends `req` to the socket at `path` and returns the successful reply.
pub fn call(path: &Path, req: &Request) -> Result<Response, CliError> {
    let unavailable = |e: std::io::Error| {
        let code = if e.kind() == std::io::ErrorKind::PermissionDenied {
            EXIT_NOPERM
        } else {
            EXIT_UNAVAILABLE
        };
        CliError {
            code,
            message: format!(
                "{}: cannot use the admin socket: {e}{}",
                path.display(),
                if code == EXIT_NOPERM {
                    " (refused: run as root, the service user, or a member of admin_group)"
                } else {
                    " (is the service running with admin_socket set? give --socket PATH)"
                }
            ),
        }
    };
    let mut s = UnixStream::connect(path).map_err(unavailable)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(unavailable)?;
    let mut line = protocol::request_line(req);
    line.push('\n');
    // The server may refuse (and close) before reading: its reply says why.
    let _ = s.write_all(line.as_bytes());
    let mut reply = String::new();
    BufReader::new(&s)
        .read_line(&mut reply)
        .map_err(unavailable)?;
    if reply.trim().is_empty() {
        return Err(CliError {
            code: EXIT_UNAVAILABLE,
            message: format!(
                "{}: the admin socket closed without a reply",
                path.display()
            ),
        });
    }
    let resp: Response = serde_json::from_str(&reply).map_err(|e| CliError {
        code: EXIT_UNAVAILABLE,
        message: format!("{}: unreadable reply ({e}): {reply}", path.display()),
    })?;
    if !resp.ok {
        let msg = resp.error.unwrap_or_default();
        let code = if msg.starts_with("permission denied") {
            EXIT_NOPERM
        } else {
            1
        };
        return Err(CliError {
            code,
            message: format!("{}: refused: {msg}", path.display()),
        });
    }
    Ok(resp)
}

/// `sessions` as a table.
pub fn sessions_table(sessions: &[SessionView]) -> String {
    let mut rows = vec![[
        "ID",
        "PEER",
        "IDENTITY",
        "BACKEND",
        "STARTED",
        "UP",
        "DOWN",
        "IDLE",
        "RESUMED",
        "NOT-AFTER",
    ]
    .map(String::from)
    .to_vec()];
    for s in sessions {
        let identity = if s.sans.is_empty() {
            s.subject.clone()
        } else {
            format!("{} [{}]", s.subject, s.sans)
        };
        rows.push(vec![
            s.id.to_string(),
            s.peer.clone(),
            identity,
            s.backend.clone(),
            time_text(Some(s.started)),
            s.bytes_up.to_string(),
            s.bytes_down.to_string(),
            format!("{}s", s.idle_ms / 1000),
            if s.resumed { "yes" } else { "no" }.into(),
            time_text(s.not_after),
        ]);
    }
    let mut out = table(&rows);
    out.push_str(&format!("{} session(s)\n", sessions.len()));
    out
}

/// `status` as text.
pub fn status_text(resp: &Response) -> String {
    let mut out = String::new();
    if let Some(a) = &resp.agent {
        out += &format!(
            "gateway      {}\ncertificate  {}\nnot after    {}\n\n",
            a.gateway,
            a.subject,
            time_text(a.not_after)
        );
        if let Some(n) = &a.note {
            out.insert_str(out.len() - 1, &format!("             {n}\n"));
        }
    }
    let mut rows = vec![["LISTEN", "BACKEND", "ACTIVE", "TOTAL", "LAST ERROR"]
        .map(String::from)
        .to_vec()];
    for t in resp.tunnels.as_deref().unwrap_or(&[]) {
        rows.push(tunnel_row(t));
    }
    out + &table(&rows)
}

fn tunnel_row(t: &TunnelStatus) -> Vec<String> {
    let err = match (&t.last_error, t.last_error_at) {
        (Some(e), Some(at)) => format!("{} {e}", time_text(Some(at))),
        (Some(e), None) => e.clone(),
        _ => "-".into(),
    };
    vec![
        t.listen.clone(),
        t.backend.clone(),
        t.active.to_string(),
        t.total.to_string(),
        err,
    ]
}

/// Last second RFC 3339 (and humantime, which fails beyond it) can write: 9999-12-31T23:59:59Z.
const LAST_RFC3339_SECOND: i64 = 253_402_300_799;

/// RFC 3339 (UTC, seconds), `-` for none, the bare number for a time RFC 3339 cannot write
/// (the value may come from a reply, so it is not trusted to be in range).
pub fn time_text(t: Option<i64>) -> String {
    match t {
        Some(t @ 0..=LAST_RFC3339_SECOND) => std::time::UNIX_EPOCH
            .checked_add(Duration::from_secs(t.unsigned_abs()))
            .map(|at| humantime::format_rfc3339_seconds(at).to_string())
            .unwrap_or_else(|| t.to_string()),
        Some(t) if t > LAST_RFC3339_SECOND => format!("{t} (Unix seconds)"),
        _ => "-".into(),
    }
}

fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.first().map_or(0, Vec::len);
    let width: Vec<usize> = (0..cols)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in rows {
        let cells: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(c, v)| format!("{v:<w$}", w = width[c]))
            .collect();
        out += cells.join("  ").trim_end();
        out.push('\n');
    }
    out
}

/// The text `disconnect` prints.
pub fn disconnect_text(resp: &Response) -> String {
    let mut out = format!(
        "disconnected {} tunnel(s)\n",
        resp.disconnected.unwrap_or(0)
    );
    if let Some(u) = resp.blocked_until {
        out += &format!("blocked until {}\n", time_text(Some(u)));
    }
    if let Some(n) = &resp.note {
        out += n;
        out.push('\n');
    }
    out
}

/// The gateway's admin socket when neither `--socket` nor `--config` says otherwise.
pub const DEFAULT_SERVER_SOCKET: &str = "/run/tunnel/admin.sock";

/// Exit status of `disconnect` when its selector matched no live tunnel (and it installed no
/// block): nothing was done, which a script should not take for success.
pub const EXIT_NO_MATCH: i32 = 1;

/// A reply rendered for the terminal, and the exit status it calls for.
#[derive(Debug)]
pub struct Rendered {
    /// What to print on stdout.
    pub text: String,
    /// The exit status: 0, or [`EXIT_NO_MATCH`].
    pub code: i32,
}

/// Sends `req` and renders the reply: JSON (the reply as is) or text.
pub fn run(socket: &Path, req: &Request, json: bool) -> Result<Rendered, CliError> {
    let resp = call(socket, req)?;
    let nothing_cut = matches!(req, Request::Disconnect { .. })
        && resp.disconnected == Some(0)
        && resp.blocked_until.is_none();
    let code = if nothing_cut { EXIT_NO_MATCH } else { 0 };
    if json {
        let mut text = serde_json::to_string_pretty(&resp).unwrap_or_default();
        text.push('\n');
        return Ok(Rendered { text, code });
    }
    let text = match req {
        Request::Sessions { .. } => {
            let mut t = sessions_table(resp.sessions.as_deref().unwrap_or(&[]));
            if let Some(n) = &resp.note {
                t += &format!("{n}\n");
            }
            t
        }
        Request::Disconnect { .. } => disconnect_text(&resp),
        Request::Status => status_text(&resp),
    };
    Ok(Rendered { text, code })
}

/// The socket to use: `--socket`, else the config file's `admin_socket` (read by `from_config`),
/// else `default` (where the shipped systemd unit puts it).
pub fn socket_path(
    explicit: Option<&Path>,
    config: Option<&Path>,
    from_config: impl FnOnce(&Path) -> Result<Option<std::path::PathBuf>, String>,
    default: &str,
) -> Result<std::path::PathBuf, CliError> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    let Some(file) = config else {
        return Ok(default.into());
    };
    match from_config(file) {
        Ok(Some(p)) => Ok(p),
        // Not in the file: the service uses systemd's runtime directory, if any.
        Ok(None) => Ok(default.into()),
        Err(e) => Err(CliError {
            code: crate::EXIT_CONFIG,
            message: e,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_text_never_panics_on_a_reply_value() {
        let cases = [
            (Some(0), "1970-01-01T00:00:00Z"),
            (Some(1_700_000_000), "2023-11-14T22:13:20Z"),
            (Some(253_402_300_799), "9999-12-31T23:59:59Z"),
            (Some(253_402_300_800), "253402300800 (Unix seconds)"),
            (Some(i64::MAX), "9223372036854775807 (Unix seconds)"),
            (Some(-1), "-"),
            (Some(i64::MIN), "-"),
            (None, "-"),
        ];
        for (t, want) in cases {
            assert_eq!(time_text(t), want, "{t:?}");
        }
    }
}
