//! Man pages from the binaries' clap `Command`s: clap_mangen renders the name, synopsis,
//! description, options and subcommands; this module adds EXAMPLES, EXIT STATUS,
//! ENVIRONMENT, FILES and SEE ALSO from the tables in each binary's `cli` module. One page
//! per (sub)command: `tunnel-server(8)`, `tunnel-server-check(8)`, `tunnel-server-pki-issue(8)`,
//! …, `tunnel-client(1)`, `tunnel-client-stdio(1)`.

use clap_mangen::roff::{bold, roman, Roff};
use clap_mangen::Man;
use std::io::Write;
use std::path::Path;

/// What one binary's man pages are made of.
pub struct Page {
    cmd: clap::Command,
    section: &'static str,
    examples: &'static [(&'static str, &'static str)],
    exit_codes: &'static [(i32, &'static str)],
    environment: &'static [(&'static str, &'static str)],
    files: &'static [(&'static str, &'static str)],
    see_also: &'static str,
}

impl Page {
    /// `tunnel-server` and its subcommands, section 8 (a system daemon).
    pub fn server() -> Page {
        use tunnel_server::cli;
        Page {
            cmd: cli::command(),
            section: "8",
            examples: cli::EXAMPLES,
            exit_codes: cli::EXIT_CODES,
            environment: cli::ENVIRONMENT,
            files: cli::FILES,
            see_also: "tunnel-client(1), systemd.service(5), openssl(1)",
        }
    }

    /// `tunnel-client` and its subcommand, section 1 (a user command).
    pub fn client() -> Page {
        use tunnel_client::cli;
        Page {
            cmd: cli::command(),
            section: "1",
            examples: cli::EXAMPLES,
            exit_codes: cli::EXIT_CODES,
            environment: cli::ENVIRONMENT,
            files: cli::FILES,
            see_also: "tunnel-server(8), ssh_config(5)",
        }
    }
}

/// Writes the page of `page.cmd` and of each of its (nested) subcommands into `dir`; returns
/// how many pages it wrote.
pub fn write_pages(page: &Page, dir: &Path) -> std::io::Result<usize> {
    // The man page states the package version; the OpenSSL version is the one linked at run
    // time, which `--version` reports.
    let mut cmd = page
        .cmd
        .clone()
        .version(env!("CARGO_PKG_VERSION"))
        .propagate_version(true)
        .disable_help_subcommand(true);
    cmd.build();
    write_tree(page, &cmd, true, dir)
}

fn write_tree(page: &Page, cmd: &clap::Command, top: bool, dir: &Path) -> std::io::Result<usize> {
    let mut n = 0;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        n += write_tree(page, sub, false, dir)?;
    }
    let man = Man::new(cmd.clone())
        .section(page.section)
        .source(format!("mtls-tunnel {}", env!("CARGO_PKG_VERSION")))
        .manual("mtls-tunnel");
    let mut f = std::fs::File::create(dir.join(man.get_filename()))?;
    render(page, &man, cmd, top, &mut f)?;
    f.flush()?;
    Ok(n + 1)
}

fn render(
    page: &Page,
    man: &Man,
    cmd: &clap::Command,
    top: bool,
    w: &mut dyn Write,
) -> std::io::Result<()> {
    man.render_title(w)?;
    man.render_name_section(w)?;
    man.render_synopsis_section(w)?;
    man.render_description_section(w)?;
    if cmd.get_arguments().any(|a| !a.is_hide_set()) {
        man.render_options_section(w)?;
    }
    if cmd.has_subcommands() {
        man.render_subcommands_section(w)?;
    }
    // The top page's --help epilogue is EXAMPLES and EXIT STATUS, written below as sections;
    // a subcommand's epilogue (pki's file layout, check's exit status) goes in as NOTES.
    let mut roff = Roff::new();
    if !top {
        if let Some(text) = cmd.get_after_long_help().or(cmd.get_after_help()) {
            roff.control("SH", ["NOTES"]);
            paragraphs(&mut roff, &text.to_string());
        }
    }
    if top {
        examples(&mut roff, page.examples);
    }
    table(
        &mut roff,
        "EXIT STATUS",
        page.exit_codes.iter().map(|(c, m)| (c.to_string(), *m)),
    );
    if top {
        table(
            &mut roff,
            "ENVIRONMENT",
            page.environment.iter().map(|(k, m)| (k.to_string(), *m)),
        );
        table(
            &mut roff,
            "FILES",
            page.files.iter().map(|(k, m)| (k.to_string(), *m)),
        );
    }
    roff.control("SH", ["SEE ALSO"]);
    roff.text([roman(page.see_also)]);
    roff.to_writer(w)?;
    man.render_version_section(w)
}

fn examples(roff: &mut Roff, examples: &[(&str, &str)]) {
    roff.control("SH", ["EXAMPLES"]);
    for (what, cmd) in examples {
        roff.control("PP", []);
        roff.text([roman(*what)]);
        roff.control("PP", []);
        roff.control("nf", []);
        roff.control("RS", ["4"]);
        for line in cmd.lines() {
            roff.text([roman(line)]);
        }
        roff.control("RE", []);
        roff.control("fi", []);
    }
}

fn table<'a>(roff: &mut Roff, heading: &str, rows: impl Iterator<Item = (String, &'a str)>) {
    roff.control("SH", [heading]);
    for (key, meaning) in rows {
        roff.control("TP", []);
        roff.text([bold(key)]);
        roff.text([roman(meaning)]);
    }
}

fn paragraphs(roff: &mut Roff, text: &str) {
    for para in text.split("\n\n") {
        roff.control("PP", []);
        roff.text([roman(para.replace('\n', " "))]);
    }
}
