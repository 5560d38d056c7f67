//! The signer under 200 concurrent issuances: every request gets a valid certificate from
//! the user CA, serials are unique, and the store records each exactly once. Prints the
//! issuance latency (p50/p99) as measured by the clients.

use openssl::x509::X509;
use std::collections::HashSet;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};
use tunnel_tests::oidc::{key_and_csr, Provider, SignerProc};
use tunnel_tests::Pki;

const N: usize = 200;

#[test]
fn two_hundred_concurrent_issuances_are_all_valid_and_recorded() {
    let pki = Arc::new(Pki::new());
    let provider = Arc::new(Provider::start(pki.dir()));
    let signer = Arc::new(SignerProc::start(&pki, &provider, "127.0.0.1:1", ""));
    // Real tokens, each bound to its own key, fetched 8 at a time.
    let requests: Vec<(String, String)> = (0..8)
        .map(|_| {
            let provider = provider.clone();
            std::thread::spawn(move || {
                (0..N / 8)
                    .map(|_| {
                        let (_, csr, nonce) = key_and_csr();
                        (csr, provider.token("bob", "tunnel", &nonce))
                    })
                    .collect::<Vec<_>>()
            })
        })
        .flat_map(|h| h.join().expect("token thread"))
        .collect();
    assert_eq!(requests.len(), N);
    let barrier = Arc::new(Barrier::new(N));
    let handles: Vec<_> = requests
        .into_iter()
        .map(|(csr, token)| {
            let (signer, barrier) = (signer.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                let started = Instant::now();
                let (status, body) = signer.request(&csr, &token, Some("1h"));
                (status, body, started.elapsed())
            })
        })
        .collect();
    let users_ca = X509::from_pem(&std::fs::read(&signer.users_ca).unwrap()).unwrap();
    let ca_key = users_ca.public_key().unwrap();
    let mut serials = HashSet::new();
    let mut latencies: Vec<Duration> = Vec::new();
    for h in handles {
        let (status, body, took) = h.join().expect("request thread");
        assert_eq!(status, 200, "{body}");
        let cert = X509::from_pem(body["certificate"].as_str().unwrap().as_bytes()).unwrap();
        assert!(cert.verify(&ca_key).unwrap(), "issued by the user CA");
        // Uniqueness of the certificates' own serials (as OpenSSL reads them), and the
        // response's `serial` must name that certificate.
        let serial = cert
            .serial_number()
            .to_bn()
            .unwrap()
            .to_hex_str()
            .unwrap()
            .to_string();
        assert_eq!(body["serial"].as_str(), Some(serial.as_str()), "{body}");
        assert!(serials.insert(serial), "unique certificate serial");
        latencies.push(took);
    }
    let records = signer.recorded();
    let recorded: HashSet<String> = records
        .iter()
        .map(|e| e["serial"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(records.len(), N, "one record per issuance");
    assert_eq!(
        recorded, serials,
        "the store holds exactly the serials issued"
    );
    latencies.sort();
    let pct = |p: usize| latencies[(latencies.len() * p / 100).min(latencies.len() - 1)];
    let mut inside: Vec<u64> = signer
        .proc
        .audits()
        .iter()
        .filter(|e| tunnel_tests::field(e, "result") == "issued")
        .map(|e| e["duration_ms"].as_u64().unwrap_or(0))
        .collect();
    inside.sort();
    let ipct = |p: usize| inside[(inside.len() * p / 100).min(inside.len() - 1)];
    println!(
        "signer: {N} concurrent issuances, client-side (TLS + request): p50 {:?}, p99 {:?}, max {:?}; \
         inside the signer: p50 {} ms, p99 {} ms",
        pct(50),
        pct(99),
        latencies[latencies.len() - 1],
        ipct(50),
        ipct(99)
    );
}
