//! Several signers, one truth (issue 23): two signers on one PostgreSQL store behind a real
//! HAProxy, one SIGKILLed in the middle of 300 concurrent issuances. Every certificate a
//! client received is recorded exactly once, serials are unique, and no token bought two
//! certificates. Also measures issuance latency on SQLite and on PostgreSQL (printed, not
//! asserted: timing is the benchmark's business).

use nix::sys::signal::Signal;
use openssl::x509::X509;
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};
use tunnel_tests::haproxy::Haproxy;
use tunnel_tests::oidc::{key_and_csr, replay_key_of, Provider, SignerProc};
use tunnel_tests::postgres::Cluster;
use tunnel_tests::{field, Pki, PROMPT};

/// `n` real tokens of `account`, each bound to its own key: (CSR, token), 8 logins at once.
fn tokens(provider: &Arc<Provider>, account: &'static str, n: usize) -> Vec<(String, String)> {
    let per = n.div_ceil(8);
    let out: Vec<(String, String)> = (0..8)
        .map(|_| {
            let provider = provider.clone();
            std::thread::spawn(move || {
                (0..per)
                    .map(|_| {
                        let (_, csr, nonce) = key_and_csr();
                        (csr, provider.token(account, "tunnel", &nonce))
                    })
                    .collect::<Vec<_>>()
            })
        })
        .flat_map(|h| h.join().expect("token thread"))
        .take(n)
        .collect();
    assert_eq!(out.len(), n);
    out
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

/// What one client got: each attempt's status (0: no answer), and its certificate.
struct Outcome {
    key: String,
    attempts: Vec<u16>,
    cert: Option<X509>,
}

#[test]
fn two_signers_on_postgresql_behind_haproxy_lose_nothing_when_one_is_killed() {
    const N: usize = 300;
    let pki = Pki::new();
    let provider = Arc::new(Provider::start(pki.dir()));
    let pg = Cluster::start("signer");
    let users = SignerProc::new_user_ca(&pki);
    let extra = pg.signer_keys("signer");
    let mut victim = SignerProc::start_in(&pki, &provider, "127.0.0.1:1", &extra, users.clone());
    let survivor = Arc::new(SignerProc::start_in(
        &pki,
        &provider,
        "127.0.0.1:1",
        &extra,
        users,
    ));
    let lb = Haproxy::start(
        pki.dir(),
        &format!(
            "  balance roundrobin\n  server s1 {}\n  server s2 {}\n",
            victim.addr, survivor.addr
        ),
    );
    let requests = tokens(&provider, "bob", N);

    let barrier = Arc::new(Barrier::new(N + 1));
    let answered = Arc::new(AtomicUsize::new(0));
    let killed = Arc::new(AtomicBool::new(false));
    let handles: Vec<_> = requests
        .into_iter()
        .map(|(csr, token)| {
            let (signer, barrier) = (survivor.clone(), barrier.clone());
            let (answered, killed, lb) = (answered.clone(), killed.clone(), lb.addr);
            std::thread::spawn(move || {
                let key = replay_key_of(&token);
                let mut attempts = Vec::new();
                barrier.wait();
                let mut got = signer.try_request_at(lb, &csr, &token, Some("1h"));
                answered.fetch_add(1, Ordering::SeqCst);
                if !matches!(&got, Some((200, _))) {
                    attempts.push(got.as_ref().map_or(0, |(s, _)| *s));
                    // Failed on the signer that died: try again once it is gone.
                    let deadline = Instant::now() + PROMPT;
                    while !killed.load(Ordering::SeqCst) && Instant::now() < deadline {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    got = signer.try_request_at(lb, &csr, &token, Some("1h"));
                }
                attempts.push(got.as_ref().map_or(0, |(s, _)| *s));
                let cert = match got {
                    Some((200, body)) => Some(
                        X509::from_pem(body["certificate"].as_str().unwrap().as_bytes()).unwrap(),
                    ),
                    _ => None,
                };
                Outcome {
                    key,
                    attempts,
                    cert,
                }
            })
        })
        .collect();
    barrier.wait();
    let started = Instant::now();
    let deadline = started + PROMPT * 3;
    // Midway: once the signer to kill has issued a few and a third of the clients have an
    // answer (the rest are in flight at both signers).
    let issued_by = |s: &SignerProc| {
        s.proc
            .audits()
            .iter()
            .filter(|e| field(e, "result") == "issued")
            .count()
    };
    while (answered.load(Ordering::SeqCst) < N / 3 || issued_by(&victim) < 5)
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    let at_kill = answered.load(Ordering::SeqCst);
    victim.proc.signal(Signal::SIGKILL);
    let kill_time = started.elapsed();
    victim.proc.wait_exit(PROMPT);
    killed.store(true, Ordering::SeqCst);
    let victim_issued = issued_by(&victim);
    let outcomes: Vec<Outcome> = handles
        .into_iter()
        .map(|h| h.join().expect("client"))
        .collect();

    let users_ca = X509::from_pem(&std::fs::read(&survivor.users_ca).unwrap()).unwrap();
    let ca_key = users_ca.public_key().unwrap();
    let mut received: HashMap<String, String> = HashMap::new(); // serial -> token key
    for o in &outcomes {
        let oks = o.attempts.iter().filter(|s| **s == 200).count();
        assert!(
            oks <= 1,
            "one token, at most one certificate: {:?}",
            o.attempts
        );
        if let Some(cert) = &o.cert {
            assert!(cert.verify(&ca_key).unwrap(), "issued by the user CA");
            let serial = cert
                .serial_number()
                .to_bn()
                .unwrap()
                .to_hex_str()
                .unwrap()
                .to_string();
            assert!(
                received.insert(serial, o.key.clone()).is_none(),
                "unique serials"
            );
        }
    }
    let retried: Vec<&Outcome> = outcomes.iter().filter(|o| o.attempts.len() > 1).collect();
    for o in &retried {
        let last = *o.attempts.last().unwrap();
        assert!(
            last == 200 || last == 401,
            "a retried token is issued, or refused as used: {:?}",
            o.attempts
        );
    }

    // The store, read by the signers' own command and by PostgreSQL directly.
    let records = survivor.recorded();
    let mut per_serial: HashMap<String, usize> = HashMap::new();
    for r in &records {
        *per_serial
            .entry(r["serial"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    let duplicates = per_serial.values().filter(|n| **n > 1).count();
    assert_eq!(duplicates, 0, "serials unique in the store");
    for serial in received.keys() {
        assert_eq!(per_serial.get(serial), Some(&1), "{serial} recorded once");
    }
    let rows = pg.psql(
        "signer",
        "SELECT encode(token, 'hex'), serial FROM issuances WHERE token IS NOT NULL",
    );
    let by_token: Vec<(String, String)> = rows
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(t, s)| (t.to_string(), s.to_string()))
        .collect();
    let tokens_recorded: HashSet<&String> = by_token.iter().map(|(t, _)| t).collect();
    assert_eq!(
        tokens_recorded.len(),
        by_token.len(),
        "no token recorded twice"
    );
    for (serial, key) in &received {
        assert!(
            by_token.iter().any(|(t, s)| t == key && s == serial),
            "{serial} is recorded for the token it was issued for"
        );
    }
    let retried_ok = retried
        .iter()
        .filter(|o| o.attempts.last() == Some(&200))
        .count();
    let retried_replayed = retried.len() - retried_ok;
    println!(
        "HA: {N} concurrent issuances through HAProxy to two signers on PostgreSQL; signer 1 \
         SIGKILLed {kill_time:?} after the start ({at_kill} answered by then, {victim_issued} \
         issued by it); certificates received: {}; first attempts failed: {} (retried: {} \
         issued, {} refused as already used); records in the store: {} ({} recorded by the \
         killed signer whose answer never arrived); duplicate serials: {duplicates}; tokens \
         with two certificates: 0",
        received.len(),
        retried.len(),
        retried_ok,
        retried_replayed,
        records.len(),
        records.len() - received.len(),
    );
    assert!(
        victim_issued > 0,
        "the killed signer had issued before it died: {}",
        victim.proc.log_text()
    );
    assert!(
        received.len() >= N - retried_replayed,
        "every client but those whose token the dead signer used got a certificate"
    );
}

/// Issuance latency on each engine: 120 issuances, 8 clients at a time, on one signer.
#[test]
fn issuance_latency_on_sqlite_and_postgresql() {
    const N: usize = 120;
    let pki = Pki::new();
    let provider = Arc::new(Provider::start(pki.dir()));
    let pg = Cluster::start("latency");
    for (engine, extra) in [
        ("SQLite", String::new()),
        ("PostgreSQL", pg.signer_keys("latency")),
    ] {
        let signer = Arc::new(SignerProc::start(&pki, &provider, "127.0.0.1:1", &extra));
        let queue = Arc::new(std::sync::Mutex::new(tokens(&provider, "bob", N)));
        let workers: Vec<_> = (0..8)
            .map(|_| {
                let (signer, queue) = (signer.clone(), queue.clone());
                std::thread::spawn(move || {
                    let mut took = Vec::new();
                    while let Some((csr, token)) = queue.lock().unwrap().pop() {
                        let t = Instant::now();
                        let (status, body) = signer.request(&csr, &token, Some("1h"));
                        assert_eq!(status, 200, "{body}");
                        took.push(t.elapsed());
                    }
                    took
                })
            })
            .collect();
        let mut client: Vec<Duration> = workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect();
        client.sort();
        let mut inside: Vec<Duration> = signer
            .proc
            .audits()
            .iter()
            .filter(|e| field(e, "result") == "issued")
            .map(|e: &Value| Duration::from_millis(e["duration_ms"].as_u64().unwrap_or(0)))
            .collect();
        inside.sort();
        assert_eq!(inside.len(), N);
        println!(
            "latency {engine}: {N} issuances, 8 concurrent clients: client-side (TLS + request) \
             p50 {:?} p99 {:?}; inside the signer p50 {:?} p99 {:?}",
            percentile(&client, 50),
            percentile(&client, 99),
            percentile(&inside, 50),
            percentile(&inside, 99),
        );
    }
}
