//! `tunnel-bench`: measures our client agent + gateway and an stunnel client + server side by
//! side on loopback, in front of the same backends, and prints a table of ours/stunnel
//! ratios. `bench/run` installs what it needs, builds, and runs `tunnel-bench run`.
// fleet.rs offers TLS sessions to OpenSSL (SSL_set_session), which the crate marks unsafe.
#![deny(unsafe_code)]

mod fleet;
mod floor;
mod gateways;
mod load;
mod nginx_mod;
mod pairs;
mod procs;
mod report;
mod tools;

use clap::{Parser, Subcommand};
use pairs::{Backends, Bins, Kind, Pair, Pki};
use report::{Better, Metric, Results, Sample, Scale};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(
    name = "tunnel-bench",
    about = "Benchmark of our tunnel pair and gateway against stunnel, HAProxy and nginx on loopback"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the benchmark and print the table.
    Run(RunArgs),
    /// Start the backends and every setup, print their ports and pids, and keep them up for
    /// SECS seconds (for profiling by hand).
    Serve {
        /// How long to keep everything up.
        #[arg(long, default_value_t = 600)]
        secs: u64,
        /// Directory holding tunnel-server and tunnel-client.
        #[arg(long, default_value = "target/release")]
        bin_dir: PathBuf,
    },
    /// Open CONNS echo-checked connections to 127.0.0.1:PORT, hold them SECS seconds, then
    /// check and close them (for memory profiling by hand).
    Hold {
        /// Port (a tunnel's local listener in front of the echo backend).
        #[arg(long)]
        port: u16,
        /// Connections.
        #[arg(long, default_value_t = 2000)]
        conns: usize,
        /// Seconds to hold them.
        #[arg(long, default_value_t = 10)]
        secs: u64,
    },
    /// Session resumption for a fleet: resumption rate and gateway CPU per connection, per
    /// session mode, one gateway and two behind HAProxy (needs haproxy).
    Fleet {
        /// Directory holding tunnel-server.
        #[arg(long, default_value = "target/release")]
        bin_dir: PathBuf,
        /// Seconds per row.
        #[arg(long, default_value_t = 10)]
        secs: u64,
        /// Client threads.
        #[arg(long, default_value_t = 2)]
        parallel: usize,
    },
    /// Echo server on 127.0.0.1:PORT (the benchmark's echo backend).
    Echo {
        /// Port to listen on.
        #[arg(long)]
        port: u16,
    },
}

#[derive(Parser, Clone)]
struct RunArgs {
    /// Smoke mode: a few seconds per metric, one repetition, 1,000 connections for scale.
    #[arg(long)]
    quick: bool,
    /// Directory holding tunnel-server and tunnel-client.
    #[arg(long, default_value = "target/release")]
    bin_dir: PathBuf,
    /// Seconds per rate measurement (default 10, quick 3).
    #[arg(long)]
    secs: Option<u64>,
    /// Repetitions of each rate measurement, alternating which pair goes first (default 3, quick 1).
    #[arg(long)]
    reps: Option<usize>,
    /// Only these metrics (comma-separated:
    /// bulk,bulkdown,connrate,reqrate,handshakes,floor,memory,scale).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Only these setups (ours, ours-gw, stunnel, haproxy, nginx).
    #[arg(long, value_delimiter = ',')]
    pairs: Vec<String>,
    /// Connections for the scale test (default 9000, quick 1000).
    #[arg(long)]
    scale: Option<usize>,
    /// Idle connections for the memory test.
    #[arg(long, default_value_t = 2000)]
    idle: usize,
    /// Concurrent connections of wrk and of the handshake loop.
    #[arg(long, default_value_t = 32)]
    conns: usize,
    /// Per-connection logs on (ours: info, stunnel: notice) instead of warn/warning.
    #[arg(long)]
    verbose_logs: bool,
    /// Set stunnel's TLS 1.3 `ciphersuites` (both sides), e.g. TLS_AES_128_GCM_SHA256, to see
    /// how much of a difference the cipher makes; stunnel's default otherwise.
    #[arg(long)]
    stunnel_ciphersuites: Option<String>,
    /// Record `perf record -e cpu-clock -g` of both processes of each pair during the first
    /// repetition of each rate metric, into this directory.
    #[arg(long)]
    perf: Option<PathBuf>,
    /// Before each rate measurement, wait up to this many seconds for other work on the
    /// machine to stop (measurements still disturbed are flagged in the table); default 60,
    /// quick 5.
    #[arg(long)]
    wait_idle: Option<u64>,
    /// Also write the table to this file.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Keep the temporary directory (configs, logs) and print where it is.
    #[arg(long)]
    keep: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Fleet {
            bin_dir,
            secs,
            parallel,
        } => match fleet::run(&bin_dir, secs, parallel) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("tunnel-bench fleet: {e}");
                ExitCode::FAILURE
            }
        },
        Cmd::Echo { port } => {
            procs::raise_nofile();
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            match rt.block_on(load::echo_server(port)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("echo server: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Cmd::Hold { port, conns, secs } => {
            procs::raise_nofile();
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            let t = Duration::from_secs(60);
            let held = rt.block_on(load::open_many(Bench::local(port), conns, 50, t));
            println!(
                "open: {} ok, {} failed {:?}",
                held.streams.len(),
                held.failed,
                held.errors
            );
            std::thread::sleep(Duration::from_secs(secs));
            let c = rt.block_on(load::check_and_close(held.streams, 64, t));
            println!("closed: {} ok, {} failed {:?}", c.ok, c.failed, c.errors);
            ExitCode::SUCCESS
        }
        Cmd::Serve { secs, bin_dir } => match serve(secs, bin_dir) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("tunnel-bench: {e}");
                ExitCode::FAILURE
            }
        },
        Cmd::Run(args) => match run(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("tunnel-bench: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

struct Bench {
    args: RunArgs,
    bins: Bins,
    pki: Pki,
    dir: PathBuf,
    backends: Backends,
    rt: tokio::runtime::Runtime,
    secs: Duration,
    starts: usize,
    tmp: Option<tempfile::TempDir>,
}

fn find(names: &[&str]) -> Result<PathBuf, String> {
    procs::find_program(names)
        .ok_or_else(|| format!("{} not found (bench/run installs it)", names[0]))
}

fn serve(secs: u64, bin_dir: PathBuf) -> Result<(), String> {
    procs::raise_nofile();
    procs::stop_children_on_signals();
    let args = RunArgs::parse_from(["run", "--bin-dir", &bin_dir.to_string_lossy(), "--keep"]);
    let mut b = setup(args)?;
    let mut pairs = Vec::new();
    for k in Kind::ALL {
        let mut p = b.start_pair(k)?;
        b.sanity(&mut p)?;
        let (c, g) = p.pids();
        println!(
            "{}: client pid {c} gateway pid {g} gateway port {} local http {} bulk {} echo {}",
            k.name(),
            p.gateway_port,
            p.local.http,
            p.local.bulk,
            p.local.echo
        );
        pairs.push(p);
    }
    println!(
        "backends: {:?}; files in {}",
        b.backends.ports,
        b.dir.display()
    );
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    std::thread::sleep(Duration::from_secs(secs));
    Ok(())
}

fn setup(args: RunArgs) -> Result<Bench, String> {
    let tmp = tempfile::Builder::new()
        .prefix("tunnel-bench-")
        .tempdir()
        .map_err(|e| format!("temp dir: {e}"))?;
    let dir = tmp.path().to_path_buf();
    let bin = |n: &str| -> Result<PathBuf, String> {
        let p = args.bin_dir.join(n);
        p.canonicalize()
            .map_err(|e| format!("{}: {e} (build with cargo build --release)", p.display()))
    };
    let bins = Bins {
        server: bin("tunnel-server")?,
        client: bin("tunnel-client")?,
        stunnel: find(&["stunnel4", "stunnel"])?,
        nginx: find(&["nginx"])?,
        nginx_stream: None,
        haproxy: procs::find_program(&["haproxy"]),
        iperf3: find(&["iperf3"])?,
        wrk: find(&["wrk"])?,
        me: std::env::current_exe().map_err(|e| e.to_string())?,
    };
    let mut bins = bins;
    bins.nginx_stream = nginx_mod::stream_module(&bins.nginx)?;
    let pki = Pki::create(&bins.server, &dir)?;
    let backends = Backends::start(&bins, &dir)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let secs = Duration::from_secs(args.secs.unwrap_or(if args.quick { 3 } else { 10 }));
    Ok(Bench {
        args,
        bins,
        pki,
        dir,
        backends,
        rt,
        secs,
        starts: 0,
        tmp: Some(tmp),
    })
}

fn metrics() -> Vec<Metric> {
    let m =
        |key, title, unit, op, better, targets| Metric::new(key, title, unit, op, better, targets);
    vec![
        m(
            "bulk",
            "bulk upload, one stream",
            "Gbit/s",
            "GB",
            Better::Higher,
            (1.2, 1.5),
        ),
        m(
            "bulkdown",
            "bulk download, one stream",
            "Gbit/s",
            "GB",
            Better::Higher,
            (1.2, 1.5),
        ),
        m(
            "connrate",
            "connection rate, new connection per request",
            "conn/s",
            "conn",
            Better::Higher,
            (1.2, 2.5),
        ),
        m(
            "reqrate",
            "request rate, persistent connections",
            "req/s",
            "req",
            Better::Higher,
            (1.2, 2.0),
        ),
        m(
            "handshakes",
            "gateway full mTLS handshakes",
            "handshakes/s",
            "handshake",
            Better::Higher,
            (1.2, 2.0),
        ),
        m(
            "memory",
            "idle memory per tunnel",
            "KiB",
            "tunnel",
            Better::Lower,
            (0.5, 0.3),
        ),
    ]
}

const RATE_KEYS: [&str; 5] = ["bulk", "bulkdown", "connrate", "reqrate", "handshakes"];

fn run(args: RunArgs) -> Result<(), String> {
    let nofile = procs::raise_nofile();
    procs::stop_children_on_signals();
    let mut b = setup(args.clone())?;
    let secs = b.secs;
    let mut machine = machine(&b.bins, nofile);
    let idle = background_load();
    machine += &format!(
        "Background load at start: {idle:.2} cores busy, {}.\n",
        procs::loadavg()
    );
    if idle > BUSY_WARN {
        machine += "WARNING: the machine was not idle; numbers are disturbed by other work.\n";
    }
    eprintln!("{machine}");
    let wants = |m: &str| args.only.is_empty() || args.only.iter().any(|o| o == m);
    let kinds: Vec<Kind> = Kind::ALL
        .into_iter()
        .filter(|k| args.pairs.is_empty() || args.pairs.iter().any(|p| p == k.name()))
        .collect();
    let reps = args.reps.unwrap_or(if args.quick { 1 } else { 3 });
    let mut metrics = metrics();
    let floors = if wants("floor") || wants("handshakes") {
        Some(floors(&b.bins, args.quick)?)
    } else {
        None
    };
    if RATE_KEYS.iter().any(|k| wants(k)) {
        b.rates(&kinds, reps, &mut metrics, &wants)?;
    }
    if wants("memory") {
        for k in &kinds {
            let s = b.memory(*k)?;
            eprintln!("memory {}: {:.1} KiB/conn {}", k.name(), s.value, s.note);
            metrics[5].of(*k).push(s);
        }
    }
    let mut scale = Vec::new();
    if wants("scale") {
        let n = args.scale.unwrap_or(if args.quick { 1000 } else { 9000 });
        for k in &kinds {
            let s = b.scale(*k, n)?;
            eprintln!("scale {}: {}/{} ok {:?}", k.name(), s.ok, n, s.errors);
            scale.push((*k, s));
        }
    }
    let command = run_command(std::env::args().skip(2));
    machine += &format!("Load at the end: {}.\n", procs::loadavg());
    let table = report::render(&Results {
        machine: &machine,
        command: &command,
        metrics: &metrics,
        scale: &scale,
        floors: floors.as_ref(),
        openssl_35: openssl::version::number() >= 0x3050_0000,
        config: &config_text(&b.args, reps, secs),
    });
    println!("{table}");
    if let Some(out) = &args.out {
        std::fs::write(out, &table).map_err(|e| format!("{}: {e}", out.display()))?;
    }
    if args.keep {
        if let Some(tmp) = b.tmp.take() {
            eprintln!("kept {}", tmp.keep().display());
        }
    }
    Ok(())
}

/// The `bench/run` command line that repeats this run: its options without `--bin-dir`,
/// which the script passes, and with `--vendored` when this build is the vendored one.
fn run_command(args: impl Iterator<Item = String>) -> String {
    let mut words = vec!["bench/run".to_string()];
    if cfg!(feature = "vendored-openssl") {
        words.push("--vendored".into());
    }
    let mut skip = false;
    for a in args {
        if std::mem::take(&mut skip) || a.starts_with("--bin-dir=") {
            continue;
        }
        if a == "--bin-dir" {
            skip = true;
            continue;
        }
        words.push(a);
    }
    words.join(" ")
}

/// The crypto floor for the system OpenSSL (`openssl speed`) and for the one linked into this
/// binary, which must be the one our gateway runs on (both come from one `cargo build`).
fn floors(bins: &Bins, quick: bool) -> Result<floor::Floors, String> {
    let linked_version = openssl::version::version().to_string();
    let server = tools::version_of(&bins.server, &["--version"], "OpenSSL");
    if !server.contains(&linked_version) {
        return Err(format!(
            "{} runs on another OpenSSL than tunnel-bench ({server} vs {linked_version}): build \
             both in one cargo build (bench/run does; bench/run --vendored for the vendored build)",
            bins.server.display()
        ));
    }
    let openssl = find(&["openssl"])?;
    let t = Duration::from_secs(if quick { 1 } else { 3 });
    eprintln!("openssl speed (floor)");
    let system = floor::measure(&openssl, t)?;
    eprintln!("{linked_version} in process (floor)");
    let linked = floor::measure_linked(t)?;
    Ok(floor::Floors {
        system,
        // "OpenSSL 3.0.19 27 Jan 2026 (Library: OpenSSL 3.0.19 27 Jan 2026)"
        system_version: tools::version_of(&openssl, &["version"], "OpenSSL")
            .split(" (")
            .next()
            .unwrap_or_default()
            .to_string(),
        linked,
        linked_version,
    })
}

fn config_text(args: &RunArgs, reps: usize, secs: Duration) -> String {
    format!(
        "Each rate is the median of {reps} run(s) of {}s, rotating which setup goes first. \
         Bulk: iperf3, one stream, upload (client to server) and download (-R). Connection rate: \
         wrk, one thread, {1} connections, `Connection: close` (one request per tunnelled \
         connection) to nginx. Request rate: the same over {1} persistent connections. \
         Handshakes: own loop, {1} concurrent, straight to the gateway with the client \
         certificate, full handshakes only (no session offered), each proven by a 1-byte echo \
         through the backend (our pair's row is our gateway's). Idle memory: RSS growth of \
         client and gateway (child processes included) after opening {2} echo-checked \
         connections (after a warm-up), divided by their number. Gateways: TLS 1.3 only, client \
         certificate required and verified, backend by SNI, their defaults otherwise (HAProxy: \
         1 h client/server timeouts; nginx: worker_processes auto, worker_connections 20000); \
         only ours also authorizes the client identity per backend. Logs: ours log_level = \
         \"{3}\", stunnel debug = {4}, HAProxy and nginx warnings only.",
        secs.as_secs(),
        args.conns,
        args.idle,
        if args.verbose_logs { "info" } else { "warn" },
        if args.verbose_logs {
            "notice"
        } else {
            "warning"
        },
    )
}

fn machine(bins: &Bins, nofile: u64) -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
            })
        })
        .unwrap_or_else(|| "?".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines().next().map(|l| {
                l.split_whitespace()
                    .nth(1)
                    .unwrap_or("0")
                    .parse::<u64>()
                    .unwrap_or(0)
            })
        })
        .unwrap_or(0);
    let nproc = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let v = |p: &Path, a: &[&str], w: &str| tools::version_of(p, a, w);
    let commit = tools::version_of(Path::new("git"), &["describe", "--always", "--dirty"], "");
    format!(
        "Machine: nproc {nproc}, CPU {cpu}, {} GiB RAM, kernel {}, RLIMIT_NOFILE {nofile}, no CPU pinning.\n\
         Versions: ours {} ({commit}), {}; {}; {}; {}; {}; {}; {}.\n",
        mem / 1024 / 1024,
        kernel.trim(),
        v(&bins.server, &["--version"], "tunnel-server"),
        v(Path::new("rustc"), &["--version"], "rustc"),
        v(&bins.stunnel, &["-version"], "stunnel "),
        v(Path::new("openssl"), &["version"], "OpenSSL"),
        v(&bins.nginx, &["-v"], "nginx"),
        bins.haproxy
            .as_deref()
            .map(|h| v(h, &["-v"], "HAProxy version"))
            .unwrap_or_else(|| "no HAProxy".into()),
        v(&bins.iperf3, &["--version"], "iperf"),
        v(&bins.wrk, &["-v"], "wrk")
            .split(" [")
            .next()
            .unwrap_or("?"),
    )
}

impl Bench {
    /// Every rate metric, `reps` times, rotating which setup goes first.
    fn rates(
        &mut self,
        kinds: &[Kind],
        reps: usize,
        metrics: &mut [Metric],
        wants: &dyn Fn(&str) -> bool,
    ) -> Result<(), String> {
        let mut pairs: Vec<Pair> = Vec::new();
        for k in kinds {
            pairs.push(self.start_pair(*k)?);
        }
        for p in pairs.iter_mut() {
            self.sanity(p)?;
        }
        for m in metrics.iter_mut().filter(|m| RATE_KEYS.contains(&m.key)) {
            if !wants(m.key) {
                continue;
            }
            for rep in 0..reps {
                let n = pairs.len();
                for j in 0..n {
                    let p = &mut pairs[(j + rep) % n];
                    // Handshakes go straight to the gateway: our pair's is our gateway's.
                    if m.key == "handshakes"
                        && p.kind == Kind::Ours
                        && kinds.contains(&Kind::OursGw)
                    {
                        continue;
                    }
                    eprintln!("{} rep {} of {reps}: {}", m.key, rep + 1, p.kind.name());
                    let s = self.measure(m.key, p, rep == 0)?;
                    eprintln!("  -> {:.2} {} {}", s.value, m.unit, s.note);
                    m.of(p.kind).push(s);
                    p.check()?;
                    self.backends.check()?;
                }
            }
        }
        Ok(())
    }

    fn start_pair(&mut self, kind: Kind) -> Result<Pair, String> {
        self.starts += 1;
        let d = self.dir.join(format!("{}-{}", kind.name(), self.starts));
        Pair::start(
            kind,
            &self.bins,
            &self.pki,
            &self.backends.ports,
            &d,
            &pairs::Options {
                verbose: self.args.verbose_logs,
                stunnel_ciphersuites: self.args.stunnel_ciphersuites.clone(),
            },
        )
    }

    fn local(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    /// One echo connection through the pair, so a misconfiguration fails early and clearly.
    fn sanity(&mut self, p: &mut Pair) -> Result<(), String> {
        let addr = Self::local(p.local.echo);
        let held = self
            .rt
            .block_on(load::open_many(addr, 3, 3, Duration::from_secs(10)));
        let closed = self.rt.block_on(load::check_and_close(
            held.streams,
            1000,
            Duration::from_secs(10),
        ));
        if held.failed > 0 || closed.ok != 3 {
            p.check()?;
            return Err(format!(
                "{} pair does not tunnel to the echo backend: {:?} {:?}; logs in {}",
                p.kind.name(),
                held.errors,
                closed.errors,
                p.client
                    .log
                    .parent()
                    .map(|d| d.display().to_string())
                    .unwrap_or_default()
            ));
        }
        Ok(())
    }

    fn measure(&mut self, key: &str, p: &mut Pair, first: bool) -> Result<Sample, String> {
        let perf = match (&self.args.perf, first) {
            (Some(dir), true) => Some(start_perf(dir, key, p)?),
            _ => None,
        };
        let wait = self
            .args
            .wait_idle
            .unwrap_or(if self.args.quick { 5 } else { 60 });
        let background = wait_idle(Duration::from_secs(wait));
        let (c0, g0) = p.cpu();
        let m0 = procs::machine_cpu();
        let t0 = Instant::now();
        let mut s = Sample::default();
        match key {
            "bulk" | "bulkdown" => {
                let down = key == "bulkdown";
                s.value = tools::iperf3(&self.bins.iperf3, p.local.bulk, self.secs, down)?;
                s.ops = s.value * self.secs.as_secs_f64() / 8.0;
            }
            "connrate" | "reqrate" => {
                let close = key == "connrate";
                let r = tools::wrk(
                    &self.bins.wrk,
                    p.local.http,
                    self.args.conns,
                    self.secs,
                    close,
                )?;
                s.value = r.rate;
                s.ops = r.requests as f64;
                if r.errors > 0 {
                    s.note = format!("{} errors: {}", r.errors, r.error_text);
                }
            }
            "handshakes" => {
                let (a, c, k) = (&self.pki.ca, &self.pki.client_crt, &self.pki.client_key);
                let tls = Arc::new(load::connector(a, c, k)?);
                let addr = Self::local(p.gateway_port);
                let h = self.rt.block_on(load::handshake_loop(
                    tls,
                    addr,
                    "echo",
                    pairs::SERVER_NAME,
                    self.args.conns,
                    self.secs,
                ));
                s.value = h.ok as f64 / h.secs;
                s.ops = h.ok as f64;
                s.note = h.cipher.clone();
                if h.failed > 0 || h.resumed > 0 {
                    s.note += &format!(
                        "; {} failed ({:?}), {} resumed",
                        h.failed, h.error, h.resumed
                    );
                }
            }
            _ => return Err(format!("unknown metric {key}")),
        }
        if background > BUSY_WARN {
            s.note += &format!(" (machine was {background:.2} cores busy before this run)");
        }
        s.secs = t0.elapsed().as_secs_f64();
        let m1 = procs::machine_cpu();
        s.machine_busy = (m1.0 - m0.0) / s.secs;
        let (c1, g1) = p.cpu();
        s.client_cpu = c1 - c0;
        s.gateway_cpu = g1 - g0;
        if let Some(mut perf) = perf {
            let pid = nix::unistd::Pid::from_raw(perf.pid() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
            perf.stop(Duration::from_secs(30));
        }
        Ok(s)
    }

    fn memory(&mut self, kind: Kind) -> Result<Sample, String> {
        let mut p = self.start_pair(kind)?;
        let addr = Self::local(p.local.echo);
        let t = Duration::from_secs(30);
        // Warm up (lazy initialisation, worker threads), then let things settle.
        let warm = self.rt.block_on(load::open_many(addr, 50, 10, t));
        self.rt.block_on(load::check_and_close(warm.streams, 64, t));
        std::thread::sleep(Duration::from_millis(500));
        let (cp, gp) = p.pids();
        let before = p.rss_kib()?;
        let held = self
            .rt
            .block_on(load::open_many(addr, self.args.idle, 50, t));
        std::thread::sleep(Duration::from_secs(1));
        let after = p.rss_kib()?;
        let threads = (procs::threads(cp), procs::threads(gp));
        let n = held.streams.len();
        let closed = self.rt.block_on(load::check_and_close(held.streams, 64, t));
        p.check()?;
        if n != self.args.idle || closed.ok != n {
            return Err(format!(
                "memory test of {}: {n} of {} opened, {} checked: {:?} {:?}",
                kind.name(),
                self.args.idle,
                closed.ok,
                held.errors,
                closed.errors
            ));
        }
        let per = |a: u64, b: u64| (a as f64 - b as f64) / n as f64;
        let (c, g) = (per(after.0, before.0), per(after.1, before.1));
        Ok(Sample {
            value: c + g,
            gateway_value: Some(g),
            note: format!(
                "client {c:.1} + gateway {g:.1} KiB/conn; RSS before {}+{} MiB, with {n} open {}+{} MiB; threads {}+{}",
                before.0 / 1024,
                before.1 / 1024,
                after.0 / 1024,
                after.1 / 1024,
                threads.0,
                threads.1
            ),
            ..Sample::default()
        })
    }

    fn scale(&mut self, kind: Kind, n: usize) -> Result<Scale, String> {
        let mut p = self.start_pair(kind)?;
        let addr = Self::local(p.local.echo);
        let held = self
            .rt
            .block_on(load::open_many(addr, n, 200, Duration::from_secs(60)));
        let (cp, gp) = p.pids();
        let mut s = Scale {
            wanted: n,
            open: held.streams.len(),
            open_secs: held.secs,
            rss: p.rss_kib().unwrap_or((0, 0)),
            threads: (procs::threads(cp), procs::threads(gp)),
            errors: held.errors.clone(),
            ..Scale::default()
        };
        let closed = self.rt.block_on(load::check_and_close(
            held.streams,
            4096,
            Duration::from_secs(120),
        ));
        s.ok = closed.ok;
        s.bytes = closed.bytes;
        s.check_secs = closed.secs;
        s.errors.extend(closed.errors);
        if let Err(e) = p.check() {
            s.errors.push(e);
        }
        Ok(s)
    }
}

/// Machine-wide busy cores above which a measurement is flagged as disturbed.
const BUSY_WARN: f64 = 0.25;

/// Cores busy machine-wide over half a second while nothing of ours runs: other work on
/// the machine that would distort the numbers.
fn background_load() -> f64 {
    let a = procs::machine_cpu();
    std::thread::sleep(Duration::from_millis(500));
    let b = procs::machine_cpu();
    (b.0 - a.0) / 0.5
}

/// Waits (up to `max`) until the machine is idle, so that other work does not distort a
/// measurement; returns the background load last seen.
fn wait_idle(max: Duration) -> f64 {
    let start = Instant::now();
    loop {
        let busy = background_load();
        if busy <= BUSY_WARN || start.elapsed() >= max {
            return busy;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn start_perf(dir: &Path, key: &str, p: &Pair) -> Result<procs::Proc, String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let (c, g) = p.pids();
    let out = dir.join(format!("{key}-{}.data", p.kind.name()));
    let mut cmd = std::process::Command::new("perf");
    cmd.args(["record", "-e", "cpu-clock", "-F", "999", "-g", "-p"])
        .arg(format!("{c},{g}"))
        .arg("-o")
        .arg(&out);
    let proc_ = procs::Proc::spawn("perf", cmd, &dir.join("perf.log"))?;
    std::thread::sleep(Duration::from_millis(300));
    Ok(proc_)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_run_command_leaves_out_the_bin_dir() {
        let args = [
            "--bin-dir",
            "x/release",
            "--quick",
            "--bin-dir=y",
            "--only",
            "memory",
        ];
        let c = run_command(args.iter().map(|a| a.to_string()));
        let vendored = if cfg!(feature = "vendored-openssl") {
            " --vendored"
        } else {
            ""
        };
        assert_eq!(c, format!("bench/run{vendored} --quick --only memory"));
    }
}
