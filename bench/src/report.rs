//! Results: samples per metric and setup, and the printed tables (gateway alone, pair, crypto
//! floor, details).

use crate::floor::{Floors, Speed};
use crate::pairs::Kind;
use std::fmt::Write as _;

/// One measurement of one setup.
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
    /// Memory tests: the gateway's share of `value` (the client's is the rest).
    pub gateway_value: Option<f64>,
    /// Anything worth saying (errors, cipher, per-agent split...).
    pub note: String,
}

impl Sample {
    /// Gateway CPU seconds per operation.
    pub fn gateway_per_op(&self) -> Option<f64> {
        (self.ops > 0.0).then(|| self.gateway_cpu / self.ops)
    }

    /// Client CPU seconds per operation.
    pub fn client_per_op(&self) -> Option<f64> {
        (self.ops > 0.0).then(|| self.client_cpu / self.ops)
    }
}

/// Whether bigger or smaller is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Better {
    /// Rates.
    Higher,
    /// Memory.
    Lower,
}

/// One metric, its samples for every setup, and its targets (issue 14).
#[derive(Debug)]
pub struct Metric {
    /// `--only` key.
    pub key: &'static str,
    /// Row title.
    pub title: &'static str,
    /// Unit of the values.
    pub unit: &'static str,
    /// What an operation is, for CPU per operation ("GB" prints ms/GB, others µs/op).
    pub op: &'static str,
    /// Direction.
    pub better: Better,
    /// Target: our gateway / best of HAProxy and nginx (both behind stunnel's client).
    pub gateway_target: f64,
    /// Target: our pair / stunnel's pair.
    pub pair_target: f64,
    /// Samples per setup, indexed by [`Kind::index`].
    pub samples: [Vec<Sample>; 5],
}

impl Metric {
    /// A metric with no samples yet.
    pub fn new(
        key: &'static str,
        title: &'static str,
        unit: &'static str,
        op: &'static str,
        better: Better,
        targets: (f64, f64),
    ) -> Metric {
        Metric {
            key,
            title,
            unit,
            op,
            better,
            gateway_target: targets.0,
            pair_target: targets.1,
            samples: Default::default(),
        }
    }

    /// The samples of `kind`.
    pub fn of(&mut self, kind: Kind) -> &mut Vec<Sample> {
        &mut self.samples[kind.index()]
    }

    /// The median sample of `kind`; handshakes go straight to the gateway, so our pair uses
    /// the samples of our gateway.
    pub fn median_of(&self, kind: Kind) -> Option<&Sample> {
        median(&self.samples[kind.index()]).or_else(|| match kind {
            Kind::Ours => median(&self.samples[Kind::OursGw.index()]),
            _ => None,
        })
    }
}

/// The sample with the median value (the lower middle one for an even count).
pub fn median(v: &[Sample]) -> Option<&Sample> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|a, b| v[*a].value.total_cmp(&v[*b].value));
    idx.get(v.len().saturating_sub(1) / 2).map(|i| &v[*i])
}

/// A number with three significant digits or so.
pub fn num(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

/// Ratio `a / b` against a target, as (ratio cell, met cell).
pub fn verdict(a: Option<f64>, b: Option<f64>, better: Better, target: f64) -> (String, String) {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => {
            let r = a / b;
            let met = match better {
                Better::Higher => r >= target,
                Better::Lower => r <= target,
            };
            (
                format!("{r:.2}×"),
                if met { "yes" } else { "**no**" }.to_string(),
            )
        }
        _ => ("–".into(), "–".into()),
    }
}

fn target_cell(better: Better, t: f64) -> String {
    match better {
        Better::Higher => format!("≥ {t}×"),
        Better::Lower => format!("≤ {t}×"),
    }
}

/// CPU per operation as a cell: ms/GB for bulk, µs per operation otherwise.
pub fn per_op_cell(secs: Option<f64>, op: &str) -> String {
    match secs {
        Some(s) if op == "GB" => format!("{} ms/GB", num(s * 1e3)),
        Some(s) => format!("{} µs", num(s * 1e6)),
        None => "–".into(),
    }
}

/// The best of HAProxy and nginx for `f` (higher or lower is better), with its name.
fn best_third(
    m: &Metric,
    better: Better,
    f: impl Fn(&Sample) -> Option<f64>,
) -> Option<(f64, &'static str)> {
    let mut best: Option<(f64, &'static str)> = None;
    for k in [Kind::Haproxy, Kind::Nginx] {
        let Some(v) = m.median_of(k).and_then(&f) else {
            continue;
        };
        let wins = match (best, better) {
            (None, _) => true,
            (Some((b, _)), Better::Higher) => v > b,
            (Some((b, _)), Better::Lower) => v < b,
        };
        if wins {
            best = Some((v, k.name()));
        }
    }
    best
}

/// The value of a metric for the gateway alone (memory: the gateway's share).
fn gateway_value(s: &Sample) -> Option<f64> {
    Some(s.gateway_value.unwrap_or(s.value))
}

/// "Gateway alone": stunnel's client in front of every gateway.
pub fn gateway_table(metrics: &[Metric]) -> String {
    let gws = [Kind::OursGw, Kind::Stunnel, Kind::Haproxy, Kind::Nginx];
    let mut s = String::from(
        "Gateway alone (stunnel's client in front of each gateway; memory: the gateway's RSS growth per idle tunnel):\n\n\
         | Metric | ours | stunnel | HAProxy | nginx | ours / best of HAProxy, nginx | target | met |\n\
         |---|---:|---:|---:|---:|---:|---:|:---:|\n",
    );
    for m in metrics {
        let cells: Vec<String> = gws
            .iter()
            .map(|k| {
                m.median_of(*k)
                    .and_then(gateway_value)
                    .map(num)
                    .unwrap_or_else(|| "–".into())
            })
            .collect();
        let ours = m.median_of(Kind::OursGw).and_then(gateway_value);
        let best = best_third(m, m.better, gateway_value);
        let (r, met) = verdict(ours, best.map(|b| b.0), m.better, m.gateway_target);
        let _ = writeln!(
            s,
            "| {} ({}) | {} | {r} (vs {}) | {} | {met} |",
            m.title,
            m.unit,
            cells.join(" | "),
            best.map(|b| b.1).unwrap_or("–"),
            target_cell(m.better, m.gateway_target)
        );
    }
    for m in metrics.iter().filter(|m| m.key != "memory") {
        let cells: Vec<String> = gws
            .iter()
            .map(|k| per_op_cell(m.median_of(*k).and_then(Sample::gateway_per_op), m.op))
            .collect();
        let ours = m.median_of(Kind::OursGw).and_then(Sample::gateway_per_op);
        let best = best_third(m, Better::Lower, Sample::gateway_per_op);
        let (r, met) = verdict(ours, best.map(|b| b.0), Better::Lower, 0.8);
        let _ = writeln!(
            s,
            "| gateway CPU per {}, {} | {} | {r} (vs {}) | ≤ 0.8× | {met} |",
            m.op,
            m.key,
            cells.join(" | "),
            best.map(|b| b.1).unwrap_or("–")
        );
    }
    s
}

/// "Pair": our client + gateway against stunnel's pair and the best third-party pair.
pub fn pair_table(metrics: &[Metric]) -> String {
    let mut s = String::from(
        "Pair (client + gateway; third-party pair = stunnel's client in front of HAProxy or nginx):\n\n\
         | Metric | ours | stunnel | best third-party pair | ours/stunnel | target | met | ours/third-party | target | met |\n\
         |---|---:|---:|---:|---:|---:|:---:|---:|---:|:---:|\n",
    );
    for m in metrics {
        let v = |k: Kind| m.median_of(k).map(|x| x.value);
        let cell = |x: Option<f64>| x.map(num).unwrap_or_else(|| "–".into());
        let best = best_third(m, m.better, |x| Some(x.value));
        let (r, met) = verdict(v(Kind::Ours), v(Kind::Stunnel), m.better, m.pair_target);
        let (r3, met3, t3) = if m.better == Better::Higher {
            let (r3, met3) = verdict(v(Kind::Ours), best.map(|b| b.0), m.better, 1.2);
            (r3, met3, "≥ 1.2×".to_string())
        } else {
            ("–".into(), "–".into(), "–".into())
        };
        let _ = writeln!(
            s,
            "| {} ({}) | {} | {} | {} ({}) | {r} | {} | {met} | {r3} | {t3} | {met3} |",
            m.title,
            m.unit,
            cell(v(Kind::Ours)),
            cell(v(Kind::Stunnel)),
            cell(best.map(|b| b.0)),
            best.map(|b| b.1).unwrap_or("–"),
            target_cell(m.better, m.pair_target)
        );
    }
    s
}

/// The crypto floor and each gateway's CPU per full handshake as a multiple of it: ours
/// against the floor of the OpenSSL it runs on, the others against the system's.
pub fn floor_table(
    floors: Option<&Floors>,
    handshakes: Option<&Metric>,
    openssl_35: bool,
) -> String {
    let Some(f) = floors else {
        return "Crypto floor: not measured.\n".into();
    };
    let (Some(system), Some(ours)) = (f.system.floor_us(), f.ours().floor_us()) else {
        return "Crypto floor: openssl speed gave no usable figures.\n".into();
    };
    let target = if openssl_35 { 3.0 } else { 5.0 };
    let figures = |sp: &Speed| {
        format!(
            "ECDSA P-256 {} sign/s, {} verify/s; X25519 {} op/s; ECDH P-256 {} op/s",
            num(sp.sign),
            num(sp.verify),
            num(sp.x25519),
            num(sp.p256)
        )
    };
    let linked = f.linked.floor_us().map(num).unwrap_or_else(|| "–".into());
    let mut s = format!(
        "Crypto floor (`openssl speed`, {}, this run, one core): {}. Floor per full mTLS \
         handshake on the gateway = 1 sign + 2 verify + 2 X25519 = {} µs.\n",
        f.system_version,
        figures(&f.system),
        num(system)
    );
    if f.same_library() {
        let _ = writeln!(
            s,
            "The same operations measured inside tunnel-bench (same library): {linked} µs."
        );
    } else {
        let _ = writeln!(
            s,
            "Our binaries run on {} (not the system's); its floor, measured inside tunnel-bench \
             with the same library: {}; per full handshake {linked} µs. Our gateway's multiple \
             is of this floor, the others' of the system's.",
            f.linked_version,
            figures(&f.linked)
        );
    }
    s.push_str(
        "\n| gateway | CPU per full handshake | × floor | target | met |\n|---|---:|---:|---:|:---:|\n",
    );
    for k in [Kind::OursGw, Kind::Stunnel, Kind::Haproxy, Kind::Nginx] {
        let per = handshakes
            .and_then(|m| m.median_of(k))
            .and_then(Sample::gateway_per_op)
            .map(|x| x * 1e6);
        let floor = if k == Kind::OursGw { ours } else { system };
        let (r, met) = verdict(per, Some(floor), Better::Lower, target);
        let (t, met) = if k == Kind::OursGw {
            (format!("≤ {target}×"), met)
        } else {
            ("–".into(), "–".into())
        };
        let _ = writeln!(
            s,
            "| {} | {} | {r} | {t} | {met} |",
            k.label(),
            per.map(|p| format!("{} µs", num(p)))
                .unwrap_or_else(|| "–".into())
        );
    }
    s
}

/// Every setup's median sample of every metric, with CPU per operation per process.
pub fn details_table(metrics: &[Metric]) -> String {
    let mut s = String::from(
        "Details (median sample; CPU = user+system seconds of each process, nginx's workers included):\n\n\
         | Metric | setup | all samples | client CPU (cores) | gateway CPU (cores) | machine busy (cores) | client CPU per op | gateway CPU per op | note |\n\
         |---|---|---|---:|---:|---:|---:|---:|---|\n",
    );
    for m in metrics {
        for k in Kind::ALL {
            let v = &m.samples[k.index()];
            let Some(x) = median(v) else { continue };
            let all: Vec<String> = v.iter().map(|x| num(x.value)).collect();
            let cores = |c: f64| {
                if x.secs > 0.0 && x.ops > 0.0 {
                    format!("{:.2}", c / x.secs)
                } else {
                    "–".into()
                }
            };
            let busy = if x.secs > 0.0 && x.ops > 0.0 {
                format!("{:.2}", x.machine_busy)
            } else {
                "–".into()
            };
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {busy} | {} | {} | {} |",
                m.title,
                k.name(),
                all.join(", "),
                cores(x.client_cpu),
                cores(x.gateway_cpu),
                per_op_cell(x.client_per_op(), m.op),
                per_op_cell(x.gateway_per_op(), m.op),
                x.note
            );
        }
    }
    s
}

/// The outcome of the scale test of one setup.
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

/// The scale test of every setup run.
pub fn scale_table(scale: &[(Kind, Scale)]) -> String {
    if scale.is_empty() {
        return String::new();
    }
    let mut s = String::from(
        "Scale (concurrent tunnels, every byte echo-checked; RSS with all open, whole process):\n\n\
         | setup | open | checked | open / check s | RSS client / gateway | threads | errors |\n\
         |---|---:|---:|---:|---:|---:|---|\n",
    );
    for (k, sc) in scale {
        let _ = writeln!(
            s,
            "| {} | {}/{} | {}/{} ({:.1} MB) | {:.1} / {:.1} | {} / {} MiB | {} / {} | {} |",
            k.name(),
            sc.open,
            sc.wanted,
            sc.ok,
            sc.wanted,
            sc.bytes as f64 / 1e6,
            sc.open_secs,
            sc.check_secs,
            sc.rss.0 / 1024,
            sc.rss.1 / 1024,
            sc.threads.0,
            sc.threads.1,
            sc.errors.join("; ")
        );
    }
    s
}

/// Everything the run measured, for [`render`].
pub struct Results<'a> {
    /// Machine and versions.
    pub machine: &'a str,
    /// The command line.
    pub command: &'a str,
    /// Every metric.
    pub metrics: &'a [Metric],
    /// Scale test per setup.
    pub scale: &'a [(Kind, Scale)],
    /// The crypto floor's figures.
    pub floors: Option<&'a Floors>,
    /// Whether our binaries run on OpenSSL ≥ 3.5 (the floor target is 3× then, 5× otherwise).
    pub openssl_35: bool,
    /// How the measurements were made.
    pub config: &'a str,
}

/// Renders the results as Markdown.
pub fn render(r: &Results) -> String {
    let hs = r.metrics.iter().find(|m| m.key == "handshakes");
    let mut setups = String::from("Setups: ");
    for k in Kind::ALL {
        let _ = write!(setups, "{} = {}; ", k.name(), k.label());
    }
    format!(
        "Command: `{}`\n\n{}\n{}\n\n{}\n{}\n{}\n{}\n{}\n{}\n",
        r.command,
        r.machine,
        setups.trim_end_matches("; "),
        gateway_table(r.metrics),
        pair_table(r.metrics),
        floor_table(r.floors, hs, r.openssl_35),
        scale_table(r.scale),
        r.config,
        details_table(r.metrics)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(value: f64, gateway_cpu: f64, ops: f64) -> Sample {
        Sample {
            value,
            secs: 1.0,
            gateway_cpu,
            ops,
            ..Sample::default()
        }
    }

    fn conn_metric() -> Metric {
        let mut m = Metric::new(
            "connrate",
            "new conn",
            "conn/s",
            "conn",
            Better::Higher,
            (1.2, 2.5),
        );
        m.of(Kind::OursGw).push(sample(1200.0, 0.6, 1200.0));
        m.of(Kind::Haproxy).push(sample(900.0, 0.9, 900.0));
        m.of(Kind::Nginx).push(sample(1000.0, 0.5, 1000.0));
        m.of(Kind::Ours).push(sample(1500.0, 0.6, 1500.0));
        m.of(Kind::Stunnel).push(sample(500.0, 0.6, 500.0));
        m
    }

    #[test]
    fn gateway_ratio_is_against_the_best_third_party_gateway() {
        let t = gateway_table(&[conn_metric()]);
        // 1200 / max(900, 1000) = 1.20 → met.
        assert!(t.contains("| 1.20× (vs nginx) | ≥ 1.2× | yes |"), "{t}");
    }

    #[test]
    fn pair_ratios_against_stunnel_and_the_best_third_party_pair() {
        let t = pair_table(&[conn_metric()]);
        // 1500/500 = 3.00 ≥ 2.5; 1500/1000 = 1.50 ≥ 1.2.
        assert!(
            t.contains("| 3.00× | ≥ 2.5× | yes | 1.50× | ≥ 1.2× | yes |"),
            "{t}"
        );
    }

    #[test]
    fn floor_multiple_and_a_missed_target_is_flagged() {
        let mut m = Metric::new(
            "handshakes",
            "hs",
            "handshakes/s",
            "handshake",
            Better::Higher,
            (1.2, 2.0),
        );
        // 1 ms of gateway CPU per handshake against a 100 µs floor: 10× > 5×.
        m.of(Kind::OursGw).push(sample(100.0, 0.1, 100.0));
        let sp = Speed {
            sign: 30_000.0,
            verify: 60_000.0,
            x25519: 60_000.0,
            p256: 0.0,
        };
        let mut f = Floors {
            system: sp,
            system_version: "OpenSSL 3.0.19 27 Jan 2026".into(),
            linked: Speed { sign: 1.0, ..sp },
            linked_version: "OpenSSL 3.0.19 27 Jan 2026".into(),
        };
        // Same library: the system's floor, whatever the in-process measurement said.
        let t = floor_table(Some(&f), Some(&m), false);
        assert!(t.contains("| 1000 µs | 10.00× | ≤ 5× | **no** |"), "{t}");
        assert!(t.contains("inside tunnel-bench (same library)"), "{t}");
        assert!(floor_table(Some(&f), Some(&m), true).contains("≤ 3×"));
        // Another library (the vendored build): ours against its own floor (here 50 µs),
        // the other gateways still against the system's.
        f.linked = Speed {
            sign: 60_000.0,
            verify: 120_000.0,
            x25519: 120_000.0,
            p256: 0.0,
        };
        f.linked_version = "OpenSSL 3.6.1 27 Jan 2026".into();
        m.of(Kind::Nginx).push(sample(100.0, 0.1, 100.0));
        let t = floor_table(Some(&f), Some(&m), true);
        assert!(t.contains("run on OpenSSL 3.6.1"), "{t}");
        assert!(t.contains("| 1000 µs | 20.00× | ≤ 3× | **no** |"), "{t}");
        assert!(
            t.contains("nginx stream | 1000 µs | 10.00× | – | – |"),
            "{t}"
        );
    }

    #[test]
    fn scale_table_is_a_markdown_table() {
        let sc = Scale {
            wanted: 10,
            open: 10,
            ok: 10,
            rss: (2048, 4096),
            ..Scale::default()
        };
        let t = scale_table(&[(Kind::Ours, sc)]);
        let rows: Vec<&str> = t.lines().skip(2).collect();
        assert_eq!(rows.len(), 3, "{t}");
        assert!(rows.iter().all(|r| r.starts_with('|')), "{t}");
        assert!(rows[2].contains("| 2 / 4 MiB |"), "{t}");
    }

    #[test]
    fn median_takes_the_middle_and_ours_pair_borrows_gateway_handshakes() {
        let mut m = conn_metric();
        m.samples[Kind::Ours.index()].clear();
        assert_eq!(m.median_of(Kind::Ours).map(|s| s.value), Some(1200.0));
        let v = [
            sample(3.0, 0.0, 0.0),
            sample(1.0, 0.0, 0.0),
            sample(2.0, 0.0, 0.0),
        ];
        assert_eq!(median(&v).map(|s| s.value), Some(2.0));
    }
}
