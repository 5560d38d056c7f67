//! Build-time tasks. `cargo run -p xtask -- docs --out DIR` writes the man pages
//! (`DIR/man/tunnel-server*.8`, `DIR/man/tunnel-client.1`) and the shell completions
//! (`DIR/completions/{bash,zsh,fish}/…`) generated from the binaries' own clap definitions
//! (`tunnel_server::cli`, `tunnel_client::cli`), so they cannot drift from `--help`.
//! `scripts/package` runs it before `cargo deb`.
#![forbid(unsafe_code)]

mod man;

use clap::{Parser, Subcommand};
use clap_complete::Shell;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "xtask",
    about = "Build-time tasks of the mtls-tunnel workspace"
)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Write man pages and bash/zsh/fish completions for both binaries into DIR.
    Docs {
        /// Output directory (created if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 64 } else { 0 });
        }
    };
    let Task::Docs { out } = cli.task;
    match docs(&out) {
        Ok(n) => {
            println!("xtask docs: wrote {n} files under {}", out.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("xtask docs: {}: {e}", out.display());
            ExitCode::from(74)
        }
    }
}

/// Writes every man page and completion file; returns how many files it wrote.
fn docs(out: &Path) -> std::io::Result<usize> {
    let man_dir = out.join("man");
    std::fs::create_dir_all(&man_dir)?;
    let mut n = 0;
    n += man::write_pages(&man::Page::server(), &man_dir)?;
    n += man::write_pages(&man::Page::client(), &man_dir)?;
    for (name, cmd) in [
        ("tunnel-server", tunnel_server::cli::command()),
        ("tunnel-client", tunnel_client::cli::command()),
    ] {
        n += completions(name, cmd, &out.join("completions"))?;
    }
    Ok(n)
}

/// Writes `bash/NAME`, `zsh/_NAME` and `fish/NAME.fish` under `dir`.
fn completions(name: &str, mut cmd: clap::Command, dir: &Path) -> std::io::Result<usize> {
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        let sub = dir.join(shell.to_string());
        std::fs::create_dir_all(&sub)?;
        let file = match shell {
            Shell::Zsh => format!("_{name}"),
            Shell::Fish => format!("{name}.fish"),
            _ => name.to_string(),
        };
        let mut f = std::fs::File::create(sub.join(file))?;
        clap_complete::generate(shell, &mut cmd, name, &mut f);
    }
    Ok(3)
}
