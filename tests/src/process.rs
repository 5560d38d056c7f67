//! Child processes of the tests: the gateway and the client agent with `log_format = "json"`,
//! their stderr parsed line by line on a thread (one JSON object per line), readiness and
//! audit events awaited with timeouts, SIGTERM, and kill on drop.
//!
//! Teardown checks the process: dropping a [`Proc`] fails the test when it logged a panic, or
//! when it exited on its own although the test never expected it to (no [`Proc::wait_exit`],
//! no terminating signal, no [`Proc::expect_exit`]).

use crate::pki::{toml_str, Creds, Pki, SERVER_NAME};
use crate::{bins, READY};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// A string field of a log event (`""` when absent or not a string).
pub fn field<'a>(ev: &'a Value, key: &str) -> &'a str {
    ev.get(key).and_then(Value::as_str).unwrap_or("")
}

/// How many "configuration reloaded" events are in `evs`.
pub fn count_reloads(evs: &[Value]) -> usize {
    evs.iter()
        .filter(|e| field(e, "message") == "configuration reloaded")
        .count()
}

/// A numeric field of a log event (panics when absent: the tests rely on these fields).
pub fn number(ev: &Value, key: &str) -> u64 {
    ev.get(key)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("event has no numeric field {key:?}: {ev}"))
}

/// A boolean field of a log event (panics when absent).
pub fn boolean(ev: &Value, key: &str) -> bool {
    ev.get(key)
        .and_then(Value::as_bool)
        .unwrap_or_else(|| panic!("event has no boolean field {key:?}: {ev}"))
}

/// Whether `ev` is an audit event.
pub fn is_audit(ev: &Value) -> bool {
    field(ev, "target") == "audit"
}

/// A command for one of our binaries with a clean, predictable environment: no
/// `TUNNEL_SERVER_*` / `TUNNEL_CLIENT_*` overrides from the caller, `info` logs (the readiness
/// lines are at info), and backtraces on so that a panic cannot go unnoticed.
pub fn command(bin: &Path) -> Command {
    let mut cmd = Command::new(bin);
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().to_string();
        if k.starts_with("TUNNEL_SERVER") || k.starts_with("TUNNEL_CLIENT") {
            cmd.env_remove(k);
        }
    }
    cmd.env("RUST_LOG", "info").env("RUST_BACKTRACE", "1");
    cmd
}

/// Runs `tunnel-server ARGS` to completion (at most `timeout`) and returns its output.
pub fn run_server(args: &[&str], timeout: Duration) -> Output {
    let mut cmd = command(&bins::server());
    cmd.args(args);
    run_to_end(cmd, timeout)
}

/// Runs `cmd` with captured stdout/stderr; kills it and panics after `timeout`.
pub fn run_to_end(cmd: Command, timeout: Duration) -> Output {
    run_with_input(cmd, None, timeout)
}

/// Like [`run_to_end`], writing `input` (if any) to the command's stdin and then closing it.
pub fn run_with_input(mut cmd: Command, input: Option<Vec<u8>>, timeout: Duration) -> Output {
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    if let (Some(data), Some(mut stdin)) = (input, child.stdin.take()) {
        std::thread::spawn(move || {
            use std::io::Write;
            let _ = stdin.write_all(&data);
        });
    }
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let t_out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let t_err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            break s;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = t_err.join().unwrap_or_default();
            panic!(
                "{cmd:?} did not exit within {timeout:?}; stderr:\n{}",
                String::from_utf8_lossy(&stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: t_out.join().unwrap_or_default(),
        stderr: t_err.join().unwrap_or_default(),
    }
}

#[derive(Default)]
struct State {
    events: Vec<Value>,
    lines: Vec<String>,
    stdout: Vec<u8>,
    stderr_closed: bool,
    /// Whether the stdout reader of [`Proc::spawn`] reached the end (true when not read).
    stdout_done: bool,
}

#[derive(Default)]
struct Logs {
    state: Mutex<State>,
    changed: Condvar,
}

impl Logs {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A running child process whose stderr is collected as log events.
pub struct Proc {
    name: String,
    child: Child,
    logs: Arc<Logs>,
    status: Option<ExitStatus>,
    exit_expected: std::sync::atomic::AtomicBool,
}

impl Proc {
    /// Spawns `cmd` (stdin and stdout not used).
    pub fn spawn(name: &str, mut cmd: Command) -> Proc {
        cmd.stdin(Stdio::null()).stdout(Stdio::piped());
        let mut p = Proc::spawn_raw(name, cmd);
        let mut out = p.child.stdout.take().expect("stdout");
        let logs = p.logs.clone();
        logs.lock().stdout_done = false;
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = out.read(&mut buf) {
                if n == 0 {
                    break;
                }
                logs.lock().stdout.extend_from_slice(&buf[..n]);
            }
            logs.lock().stdout_done = true;
            logs.changed.notify_all();
        });
        p
    }

    /// Spawns `cmd` with stdin and stdout as pipes the caller drives (`tunnel-client stdio`).
    pub fn spawn_stdio(name: &str, mut cmd: Command) -> (Proc, ChildStdin, ChildStdout) {
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
        let mut p = Proc::spawn_raw(name, cmd);
        let i = p.child.stdin.take().expect("stdin");
        let o = p.child.stdout.take().expect("stdout");
        (p, i, o)
    }

    fn spawn_raw(name: &str, mut cmd: Command) -> Proc {
        cmd.stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({cmd:?}): {e}"));
        let err = child.stderr.take().expect("stderr");
        let logs = Arc::new(Logs::default());
        // Only Proc::spawn reads stdout (and says so); otherwise there is nothing to wait for.
        logs.lock().stdout_done = true;
        let logs2 = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                let ev = serde_json::from_str::<Value>(&line)
                    .ok()
                    .filter(Value::is_object)
                    .unwrap_or_else(|| serde_json::json!({ "raw": line }));
                let mut st = logs2.lock();
                st.events.push(ev);
                st.lines.push(line);
                drop(st);
                logs2.changed.notify_all();
            }
            logs2.lock().stderr_closed = true;
            logs2.changed.notify_all();
        });
        Proc {
            name: name.to_string(),
            child,
            logs,
            status: None,
            exit_expected: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Tells teardown that this process may end on its own (e.g. a client that fails to
    /// start on purpose).
    pub fn expect_exit(&self) {
        self.exit_expected.store(true, Ordering::Relaxed);
    }

    /// The first panic the process logged: an event of the panic hook (target `panic`) or the
    /// standard `panicked at` line.
    pub fn panic_logged(&self) -> Option<String> {
        let st = self.logs.lock();
        st.events
            .iter()
            .zip(st.lines.iter())
            .find(|(e, l)| field(e, "target") == "panic" || l.contains("panicked at"))
            .map(|(_, l)| l.clone())
    }

    /// The process id.
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Every stderr line so far, for failure messages.
    pub fn log_text(&self) -> String {
        self.logs.lock().lines.join("\n")
    }

    /// Everything the process wrote to stdout so far.
    pub fn stdout(&self) -> Vec<u8> {
        self.logs.lock().stdout.clone()
    }

    /// Every log event so far.
    pub fn events(&self) -> Vec<Value> {
        self.logs.lock().events.clone()
    }

    /// Every audit event so far.
    pub fn audits(&self) -> Vec<Value> {
        self.events().into_iter().filter(is_audit).collect()
    }

    /// Waits until `check` finds something in the events so far; panics (with the process's
    /// log) after `timeout` or when the process closes stderr (exits) first.
    pub fn wait_until<T>(
        &self,
        what: &str,
        timeout: Duration,
        check: impl Fn(&[Value]) -> Option<T>,
    ) -> T {
        match self.try_wait_until(timeout, check) {
            Ok(v) => v,
            Err(why) => panic!(
                "{}: {why} while waiting for {what}; its log:\n{}",
                self.name,
                self.log_text()
            ),
        }
    }

    /// Like [`Proc::wait_until`] but returns why it gave up instead of panicking.
    pub fn try_wait_until<T>(
        &self,
        timeout: Duration,
        check: impl Fn(&[Value]) -> Option<T>,
    ) -> Result<T, String> {
        let deadline = Instant::now() + timeout;
        let mut st = self.logs.lock();
        loop {
            if let Some(v) = check(&st.events) {
                return Ok(v);
            }
            if st.stderr_closed {
                return Err("the process exited".into());
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(format!("timed out after {timeout:?}"));
            }
            st = self
                .logs
                .changed
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Waits for the first stderr line containing `needle` (for processes logging text, not
    /// JSON) and returns it.
    pub fn wait_for_line(&self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        let mut st = self.logs.lock();
        loop {
            if let Some(l) = st.lines.iter().find(|l| l.contains(needle)) {
                return l.clone();
            }
            let now = Instant::now();
            assert!(
                !st.stderr_closed && now < deadline,
                "{}: no line with {needle:?}; its log:\n{}",
                self.name,
                st.lines.join("\n")
            );
            st = self
                .logs
                .changed
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Waits until each of `n` refusals is accounted for in the log: written one by one
    /// (`is_line`) or counted in the log limiter's suppression reports; returns the reports.
    pub fn wait_refusals_accounted(
        &self,
        n: u64,
        timeout: Duration,
        is_line: impl Fn(&Value) -> bool,
    ) -> Vec<Value> {
        self.wait_until("the suppressed-lines report", timeout, |evs| {
            let logged = evs.iter().filter(|e| is_line(e)).count() as u64;
            let reports: Vec<Value> = evs
                .iter()
                .filter(|e| is_audit(e) && e.get("suppressed").is_some())
                .cloned()
                .collect();
            let suppressed: u64 = reports.iter().map(|e| number(e, "suppressed")).sum();
            (logged + suppressed == n).then_some(reports)
        })
    }

    /// Waits for the first event matching `pred`.
    pub fn wait_for(&self, what: &str, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        self.wait_until(what, timeout, |evs| evs.iter().find(|e| pred(e)).cloned())
    }

    /// Waits for the first event whose `message` is `msg`.
    pub fn wait_for_message(&self, msg: &str, timeout: Duration) -> Value {
        self.wait_for(msg, timeout, |e| field(e, "message") == msg)
    }

    /// Waits for the first audit event matching `pred`.
    pub fn wait_for_audit(&self, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        self.wait_for("an audit event", timeout, |e| is_audit(e) && pred(e))
    }

    /// The address the metrics endpoint is bound to (configure `metrics = "127.0.0.1:0"`): the
    /// `metrics` field of the gateway's `gateway listening` or the agent's `metrics listening`.
    pub fn metrics_addr(&self) -> SocketAddr {
        self.wait_until("the metrics address", READY, |evs| {
            evs.iter()
                .filter(|e| {
                    matches!(
                        field(e, "message"),
                        "gateway listening" | "metrics listening"
                    )
                })
                .find_map(|e| field(e, "metrics").parse().ok())
        })
    }

    /// Sends `sig` to the process (a terminating signal makes its exit expected).
    pub fn signal(&self, sig: Signal) {
        if matches!(sig, Signal::SIGTERM | Signal::SIGINT | Signal::SIGKILL) {
            self.expect_exit();
        }
        kill(Pid::from_raw(self.pid()), sig).expect("kill(2)");
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        self.signal(Signal::SIGTERM);
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        if self.status.is_some() {
            return false;
        }
        match self.child.try_wait() {
            Ok(Some(s)) => {
                self.status = Some(s);
                false
            }
            _ => true,
        }
    }

    /// Waits for the process to exit; panics after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        self.expect_exit();
        let deadline = Instant::now() + timeout;
        while self.running() {
            if Instant::now() >= deadline {
                panic!(
                    "{} did not exit within {timeout:?}; its log:\n{}",
                    self.name,
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        // Exited: its last output may still be in the readers' hands. Wait (briefly) until
        // both pipes reached their end, so that callers read everything it wrote.
        let drained = Instant::now() + Duration::from_secs(5);
        let mut st = self.logs.lock();
        while !(st.stderr_closed && st.stdout_done) && Instant::now() < drained {
            st = self
                .logs
                .changed
                .wait_timeout(st, Duration::from_millis(50))
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
        drop(st);
        self.status.expect("exited")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // A process closes stderr a moment before it can be reaped: give it that moment.
        if self.logs.lock().stderr_closed {
            let deadline = Instant::now() + Duration::from_secs(2);
            while self.running() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let exited_early = !self.running() && !self.exit_expected.load(Ordering::Relaxed);
        if !exited_early {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!("----- log of {} -----\n{}", self.name, self.log_text());
            return;
        }
        if let Some(line) = self.panic_logged() {
            panic!(
                "{} logged a panic: {line}\n----- its log -----\n{}",
                self.name,
                self.log_text()
            );
        }
        if exited_early {
            panic!(
                "{} exited before the test ended ({:?}) without the test expecting it\n----- its log -----\n{}",
                self.name,
                self.status,
                self.log_text()
            );
        }
    }
}

/// A running gateway (`tunnel-server --config F`).
pub struct Gateway {
    /// The process.
    pub proc: Proc,
    /// The (first) address it listens on.
    pub addr: SocketAddr,
    /// Its configuration file.
    pub config: PathBuf,
}

impl Gateway {
    /// The top of a config file in `pki`'s directory: ephemeral listen port, the fixture's
    /// certificate, key and CA by relative path (resolved against the file's directory), and
    /// JSON logs. Tests append top-level keys and then `[[backend]]` tables.
    pub fn header() -> String {
        "listen = \"127.0.0.1:0\"\n\
         cert = \"server.crt\"\n\
         key = \"server.key\"\n\
         client_ca = \"ca.crt\"\n\
         log_format = \"json\"\n"
            .to_string()
    }

    /// Writes [`Gateway::header`] + `body` to a new file in `pki`'s directory and starts it.
    pub fn start(pki: &Pki, body: &str) -> Gateway {
        let path = pki.write("server", "toml", &(Gateway::header() + body));
        Gateway::start_file(&path)
    }

    /// Starts a gateway on an existing config file and waits for `gateway listening`.
    pub fn start_file(config: &Path) -> Gateway {
        Gateway::start_command(command(&bins::server()), config)
    }

    /// Like [`Gateway::start_file`], with `cmd` (from [`command`], with its own environment).
    pub fn start_command(mut cmd: Command, config: &Path) -> Gateway {
        cmd.arg("--config").arg(config);
        let proc = Proc::spawn("tunnel-server", cmd);
        let ev = proc.wait_for_message("gateway listening", READY);
        let listen = field(&ev, "listen");
        let addr = listen
            .split(',')
            .next()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("bad listen field in {ev}"));
        Gateway {
            proc,
            addr,
            config: config.to_path_buf(),
        }
    }

    /// The audit event of the connection from `peer` (a client's local address).
    pub fn audit_for(&self, peer: SocketAddr) -> Value {
        let want = peer.to_string();
        self.proc
            .wait_for_audit(crate::PROMPT, |e| field(e, "peer") == want)
    }
}

impl std::ops::Deref for Gateway {
    type Target = Proc;
    fn deref(&self) -> &Proc {
        &self.proc
    }
}

impl std::ops::DerefMut for Gateway {
    fn deref_mut(&mut self) -> &mut Proc {
        &mut self.proc
    }
}

/// What to put in a client agent's config file.
pub struct AgentSpec<'a> {
    /// Gateway `host:port`.
    pub server: String,
    /// Name to verify in the gateway certificate.
    pub server_name: &'a str,
    /// Client certificate and key.
    pub creds: &'a Creds,
    /// CA bundle for the gateway.
    pub ca: &'a Path,
    /// One tunnel per backend, each on an ephemeral port.
    pub backends: &'a [&'a str],
    /// More top-level keys (`max_connections = 2`).
    pub extra: &'a str,
}

/// A running client agent (`tunnel-client --config F`).
pub struct Agent {
    /// The process.
    pub proc: Proc,
    /// The local address of each tunnel, in the order of the backends given.
    pub listens: Vec<SocketAddr>,
    /// Its configuration file.
    pub config: PathBuf,
}

impl Agent {
    /// An agent with `creds` trusting `pki`'s CA, verifying the gateway as `localhost`, with one
    /// tunnel per backend.
    pub fn start(pki: &Pki, gateway: SocketAddr, creds: &Creds, backends: &[&str]) -> Agent {
        Agent::start_spec(
            pki,
            &AgentSpec {
                server: gateway.to_string(),
                server_name: SERVER_NAME,
                creds,
                ca: &pki.ca_crt,
                backends,
                extra: "",
            },
        )
    }

    /// An agent from a full spec; its config file goes into `pki`'s directory.
    pub fn start_spec(pki: &Pki, spec: &AgentSpec) -> Agent {
        let config = pki.write("client", "toml", &client_toml(spec));
        let mut cmd = command(&bins::client());
        cmd.arg("--config").arg(&config);
        let proc = Proc::spawn("tunnel-client", cmd);
        let n = spec.backends.len();
        let listens = proc.wait_until("tunnel listening", READY, |evs| {
            let addrs: Vec<SocketAddr> = evs
                .iter()
                .filter(|e| field(e, "message") == "tunnel listening")
                .filter_map(|e| field(e, "listen").parse().ok())
                .collect();
            (addrs.len() >= n).then_some(addrs)
        });
        Agent {
            proc,
            listens,
            config,
        }
    }

    /// The local address of the first tunnel.
    pub fn addr(&self) -> SocketAddr {
        self.listens[0]
    }
}

/// The client config file for `spec`: JSON logs, one `[[tunnel]]` per backend on an
/// ephemeral port.
pub fn client_toml(spec: &AgentSpec) -> String {
    // A list (`["a:1", "b:2"]`) goes in as TOML; one address as a string.
    let server = if spec.server.starts_with('[') {
        spec.server.clone()
    } else {
        format!("\"{}\"", spec.server)
    };
    let mut toml = format!(
        "server = {}\nserver_name = \"{}\"\ncert = {}\nkey = {}\nca = {}\nlog_format = \"json\"\n{}\n",
        server,
        spec.server_name,
        toml_str(&spec.creds.cert),
        toml_str(&spec.creds.key),
        toml_str(spec.ca),
        spec.extra
    );
    for b in spec.backends {
        toml += &format!("\n[[tunnel]]\nlisten = \"127.0.0.1:0\"\nbackend = \"{b}\"\n");
    }
    toml
}

impl std::ops::Deref for Agent {
    type Target = Proc;
    fn deref(&self) -> &Proc {
        &self.proc
    }
}

impl std::ops::DerefMut for Agent {
    fn deref_mut(&mut self) -> &mut Proc {
        &mut self.proc
    }
}
