//! Results: samples per metric and pair, the machine description, and the printed table.

use crate::pairs::Kind;
use std::fmt::Write as _;

/// One measurement of one pair.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    /// The metric's value (rate, Gbit/s, KiB...).
    pub value: f64,
    /// Wall time measured, seconds.
    pub secs: f64,
    /// CPU seconds the client side used during it.
    pub client_cpu: f64,
    /// CPU seconds the gateway side used during it.
    pub gateway_cpu: f64,
    /// Cores busy machine-wide during it (all processes, kernel included).
    pub machine_busy: f64,
    /// Operations done (requests, handshakes, GB...), for CPU per operation.
    pub ops: f64,
    /// Anything worth saying (errors, cipher, per-agent split...).
    pub note: String,
}

/// Whether bigger or smaller is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Better {
    /// Rates.
    Higher,
    /// Memory.
    Lower,
}

/// One row of the table.
#[derive(Debug)]
pub struct Metric {
    /// Row title.
    pub title: &'static str,
    /// Unit of the values.
    pub unit: &'static str,
    /// What an operation is, for CPU per operation.
    pub op: &'static str,
    /// Direction.
    pub better: Better,
    /// Target ratio ours/stunnel.
    pub target: f64,
    /// Our samples.
    pub ours: Vec<Sample>,
    /// stunnel's samples.
    pub stunnel: Vec<Sample>,
}

impl Metric {
    /// A row with no samples yet.
    pub fn new(
        title: &'static str,
        unit: &'static str,
        op: &'static str,
        better: Better,
        target: f64,
    ) -> Metric {
        Metric {
            title,
            unit,
            op,
            better,
            target,
            ours: Vec::new(),
            stunnel: Vec::new(),
        }
    }

    /// The samples of `kind`.
    pub fn of(&mut self, kind: Kind) -> &mut Vec<Sample> {
        match kind {
            Kind::Ours => &mut self.ours,
            Kind::Stunnel => &mut self.stunnel,
        }
    }

    fn ratio(&self) -> Option<f64> {
        let (o, s) = (median(&self.ours)?, median(&self.stunnel)?);
        (s.value > 0.0).then(|| o.value / s.value)
    }

    fn met(&self) -> Option<bool> {
        let r = self.ratio()?;
        Some(match self.better {
            Better::Higher => r >= self.target,
            Better::Lower => r <= self.target,
        })
    }
}

/// The sample with the median value (the lower middle one for an even count).
pub fn median(v: &[Sample]) -> Option<&Sample> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|a, b| v[*a].value.total_cmp(&v[*b].value));
    idx.get(v.len().saturating_sub(1) / 2).map(|i| &v[*i])
}

fn num(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

/// The outcome of the scale test of one pair.
#[derive(Debug, Default, Clone)]
pub struct Scale {
    /// Connections attempted.
    pub wanted: usize,
    /// Open and echo-checked at the same time.
    pub open: usize,
    /// Passed the final check (more bytes echoed, half-close seen).
    pub ok: usize,
    /// Bytes checked in all.
    pub bytes: u64,
    /// Time to open them all.
    pub open_secs: f64,
    /// Time of the final check.
    pub check_secs: f64,
    /// RSS of (client, gateway) with all open, KiB.
    pub rss: (u64, u64),
    /// Threads of (client, gateway) with all open.
    pub threads: (u64, u64),
    /// First errors.
    pub errors: Vec<String>,
}

impl Scale {
    fn cell(&self) -> String {
        if self.wanted == 0 {
            return "not run".into();
        }
        format!(
            "{}/{} ok (open {:.1} s, check {:.1} s)",
            self.ok, self.wanted, self.open_secs, self.check_secs
        )
    }
}

/// Renders the results as Markdown.
pub fn render(
    machine: &str,
    command: &str,
    metrics: &[Metric],
    scale: &[Scale; 2],
    config: &str,
) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "Command: `{command}`\n");
    let _ = writeln!(s, "{machine}");
    let _ = writeln!(
        s,
        "| Metric | ours | stunnel | ours/stunnel | target | met |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|:---:|");
    for m in metrics {
        let cell = |k: &[Sample]| {
            median(k)
                .map(|x| num(x.value))
                .unwrap_or_else(|| "–".into())
        };
        let ratio = m
            .ratio()
            .map(|r| format!("{r:.2}×"))
            .unwrap_or_else(|| "–".into());
        let target = match m.better {
            Better::Higher => format!("≥ {}×", m.target),
            Better::Lower => format!("≤ {}×", m.target),
        };
        let met = match m.met() {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "–",
        };
        let _ = writeln!(
            s,
            "| {} ({}) | {} | {} | {ratio} | {target} | {met} |",
            m.title,
            m.unit,
            cell(&m.ours),
            cell(&m.stunnel)
        );
    }
    let [ours, st] = scale;
    let met = if ours.wanted > 0 && ours.ok == ours.wanted {
        "yes"
    } else {
        "**no**"
    };
    let _ = writeln!(
        s,
        "| scale: {} concurrent tunnelled connections, every byte echo-checked | {} | {} | – | all ok | {met} |",
        ours.wanted,
        ours.cell(),
        st.cell()
    );
    let _ = writeln!(s, "\n{config}");
    let _ = writeln!(s, "\nDetails (median sample; CPU = user+system seconds of each process during the measurement):\n");
    let _ = writeln!(s, "| Metric | pair | all samples | client CPU (cores) | gateway CPU (cores) | machine busy (cores) | pair CPU per op | note |");
    let _ = writeln!(s, "|---|---|---|---:|---:|---:|---:|---|");
    for m in metrics {
        for (name, v) in [("ours", &m.ours), ("stunnel", &m.stunnel)] {
            let Some(x) = median(v) else { continue };
            let all: Vec<String> = v.iter().map(|x| num(x.value)).collect();
            let per_op = if x.ops > 0.0 && m.op == "GB" {
                format!(
                    "{} ms/GB",
                    num((x.client_cpu + x.gateway_cpu) / x.ops * 1e3)
                )
            } else if x.ops > 0.0 {
                format!(
                    "{} µs/{}",
                    num((x.client_cpu + x.gateway_cpu) / x.ops * 1e6),
                    m.op
                )
            } else {
                "–".into()
            };
            let cores = |c: f64| {
                if x.secs > 0.0 {
                    format!("{:.2}", c / x.secs)
                } else {
                    "–".into()
                }
            };
            let _ = writeln!(
                s,
                "| {} | {name} | {} | {} | {} | {} | {per_op} | {} |",
                m.title,
                all.join(", "),
                cores(x.client_cpu),
                cores(x.gateway_cpu),
                if x.secs > 0.0 {
                    format!("{:.2}", x.machine_busy)
                } else {
                    "–".into()
                },
                x.note
            );
        }
    }
    for (name, sc) in [("ours", ours), ("stunnel", st)] {
        if sc.wanted == 0 {
            continue;
        }
        let _ = writeln!(
            s,
            "| scale | {name} | {}/{} open, {}/{} checked, {:.1} MB checked | RSS {} MiB | RSS {} MiB | – | threads {}/{} | {} |",
            sc.open,
            sc.wanted,
            sc.ok,
            sc.wanted,
            sc.bytes as f64 / 1e6,
            sc.rss.0 / 1024,
            sc.rss.1 / 1024,
            sc.threads.0,
            sc.threads.1,
            sc.errors.join("; ")
        );
    }
    s
}
