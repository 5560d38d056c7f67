//! `tunnel-client request`, `requests`, `approve` and `deny`: command-line side of
//! just-in-time access (the work is in `tunnel_core::signin::login::request`).

use std::future::Future;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tunnel_client::cli::RequestArgs;
use tunnel_core::signin::login::files;
use tunnel_core::signin::login::request::{AccessClient, AccessError};
use tunnel_core::signin::signer::access::wire::RequestView;
use tunnel_core::{EXIT_CONFIG, EXIT_RUNTIME};

/// How often `--wait` asks the signer.
const POLL: Duration = Duration::from_secs(2);

/// Runs `work` with a client of the per-user config (or `--config`); prints its error.
fn with_client<F, Fut>(cmd: &str, config: Option<&Path>, work: F) -> ExitCode
where
    F: FnOnce(AccessClient) -> Fut,
    Fut: Future<Output = Result<(), AccessError>>,
{
    let Some(config) = files::default_config(config) else {
        eprintln!("tunnel-client {cmd}: neither --config, $XDG_CONFIG_HOME nor $HOME is set; give --config FILE");
        return ExitCode::from(EXIT_CONFIG as u8);
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_RUNTIME as u8);
        }
    };
    let done = rt.block_on(async {
        let client = AccessClient::from_config(&config)?;
        work(client).await
    });
    match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tunnel-client {cmd}: {e}");
            e.exit().into()
        }
    }
}

fn time(unix: i64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(unix.max(0) as u64))
        .to_string()
}

fn age(since: i64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    humantime::format_duration(Duration::from_secs((now - since).max(0) as u64)).to_string()
}

fn secs(s: i64) -> String {
    humantime::format_duration(Duration::from_secs(s.max(0) as u64)).to_string()
}

/// `tunnel-client request ROLE --for D --reason R [--wait]`, `--list`, `--fetch ID`.
pub fn request(args: RequestArgs, config: Option<&Path>) -> ExitCode {
    if args.list {
        return with_client("request", config, |c| async move {
            let mine = c.mine().await?;
            if mine.is_empty() {
                println!("No access requests.");
            }
            for r in mine {
                let until = r.grant_ends_at.map(|t| format!(" until {}", time(t)));
                println!(
                    "{}  {}  {} for {}  {}{}  ({})",
                    r.id,
                    r.state,
                    r.role,
                    secs(r.duration),
                    age(r.created_at),
                    until.unwrap_or_default(),
                    r.reason
                );
            }
            Ok(())
        });
    }
    if let Some(id) = args.fetch {
        return with_client("request", config, |c| async move { install(&c, &id).await });
    }
    let role = args.role.unwrap_or_default();
    let wait = if args.wait {
        match humantime::parse_duration(&args.timeout) {
            Ok(d) => Some(d),
            Err(e) => {
                eprintln!("tunnel-client request: --timeout {:?}: {e}", args.timeout);
                return ExitCode::from(EXIT_CONFIG as u8);
            }
        }
    } else {
        None
    };
    with_client("request", config, |c| async move {
        let r = c.request(&role, &args.duration, &args.reason).await?;
        println!(
            "Requested {} for {}: request {} ({} approval{} needed from: {})",
            r.role,
            secs(r.duration),
            r.id,
            r.approvals_needed,
            if r.approvals_needed == 1 { "" } else { "s" },
            r.approver_groups.join(", ")
        );
        println!("  approvers run: tunnel-client approve {}", r.id);
        let Some(timeout) = wait else {
            println!("  once approved: tunnel-client request --fetch {}", r.id);
            return Ok(());
        };
        println!(
            "Waiting for a decision (up to {})...",
            secs(timeout.as_secs() as i64)
        );
        let decided = c.wait(&r.id, timeout, POLL).await?;
        if decided.state != "approved" {
            return Err(AccessError::NotApproved {
                id: decided.id,
                state: decided.state,
            });
        }
        install(&c, &r.id).await
    })
}

async fn install(c: &AccessClient, id: &str) -> Result<(), AccessError> {
    let i = c.install(id).await?;
    println!(
        "Approved: elevated certificate {} valid until {}\n  certificate: {}",
        i.serial,
        time(i.not_after),
        i.cert.display()
    );
    Ok(())
}

fn show(r: &RequestView) {
    println!(
        "{}  {}  {} for {}  by {}  {} ago  ({}/{} approvals)  reason: {}",
        r.id,
        r.state,
        r.role,
        secs(r.duration),
        r.requester,
        age(r.created_at),
        r.approvals,
        r.approvals_needed,
        r.reason
    );
}

/// `tunnel-client requests`: the pending requests one may decide.
pub fn pending(config: Option<&Path>) -> ExitCode {
    with_client("requests", config, |c| async move {
        let all = c.pending().await?;
        if all.is_empty() {
            println!("No pending requests you may decide.");
        }
        all.iter().for_each(show);
        Ok(())
    })
}

/// `tunnel-client approve ID [--reason R]` and `deny ID --reason R`.
pub fn decide(config: Option<&Path>, id: &str, approve: bool, reason: &str) -> ExitCode {
    let cmd = if approve { "approve" } else { "deny" };
    with_client(cmd, config, |c| async move {
        let r = c.decide(id, approve, reason).await?;
        show(&r);
        if let Some(until) = r.grant_ends_at {
            println!("Granted until {}", time(until));
        }
        Ok(())
    })
}
