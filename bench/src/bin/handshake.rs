//! `handshake`: cost of one full mutual-TLS 1.3 handshake per key exchange group, with the
//! OpenSSL this binary is linked to (system 3.0, or >= 3.5 with `--features vendored-openssl`).
//! Both ends run in this process on loopback, ECDSA P-256 certificates as `tunnel-server pki`
//! issues, no resumption. Usage: `handshake [N] [GROUP...]` (default 300, X25519 and, where
//! available, X25519MLKEM768). Prints the median and mean of N handshakes per group.
#![forbid(unsafe_code)]

use openssl::asn1::Asn1Time;
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::ssl::{SslAcceptor, SslConnector, SslMethod, SslVerifyMode, SslVersion};
use openssl::x509::{X509NameBuilder, X509};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

fn self_signed(cn: &str) -> (X509, PKey<Private>) {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).expect("P-256");
    let key = PKey::from_ec_key(EcKey::generate(&group).expect("key")).expect("pkey");
    let mut name = X509NameBuilder::new().expect("name");
    name.append_entry_by_nid(Nid::COMMONNAME, cn).expect("cn");
    let name = name.build();
    let mut b = X509::builder().expect("x509");
    b.set_version(2).expect("v3");
    b.set_subject_name(&name).expect("subject");
    b.set_issuer_name(&name).expect("issuer");
    b.set_pubkey(&key).expect("pubkey");
    b.set_not_before(&Asn1Time::days_from_now(0).expect("t"))
        .expect("nb");
    b.set_not_after(&Asn1Time::days_from_now(1).expect("t"))
        .expect("na");
    b.sign(&key, MessageDigest::sha256()).expect("sign");
    (b.build(), key)
}

fn run(group: &str, n: usize) -> Result<Vec<Duration>, String> {
    let (scert, skey) = self_signed("server");
    let (ccert, ckey) = self_signed("client");
    let mut a =
        SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).map_err(|e| e.to_string())?;
    a.set_certificate(&scert)
        .and_then(|_| a.set_private_key(&skey))
        .map_err(|e| e.to_string())?;
    a.set_min_proto_version(Some(SslVersion::TLS1_3))
        .map_err(|e| e.to_string())?;
    a.set_groups_list(group)
        .map_err(|_| format!("group {group} not supported"))?;
    a.cert_store_mut()
        .add_cert(ccert.clone())
        .map_err(|e| e.to_string())?;
    a.set_verify(SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT);
    a.set_num_tickets(0).map_err(|e| e.to_string())?;
    let acceptor = a.build();
    let mut c = SslConnector::builder(SslMethod::tls()).map_err(|e| e.to_string())?;
    c.set_certificate(&ccert)
        .and_then(|_| c.set_private_key(&ckey))
        .map_err(|e| e.to_string())?;
    c.set_groups_list(group).map_err(|e| e.to_string())?;
    c.cert_store_mut()
        .add_cert(scert)
        .map_err(|e| e.to_string())?;
    let connector = c.build();
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let server = std::thread::spawn(move || {
        for _ in 0..n {
            let (s, _) = listener.accept().expect("accept");
            s.set_nodelay(true).ok();
            let _ = acceptor.accept(s).map(|mut t| t.shutdown());
        }
    });
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let s = TcpStream::connect(addr).map_err(|e| e.to_string())?;
        s.set_nodelay(true).ok();
        let mut cfg = connector.configure().map_err(|e| e.to_string())?;
        cfg.set_verify_hostname(false);
        let mut tls = cfg.connect("server", s).map_err(|e| e.to_string())?;
        // The server's first read completes its side; wait for its close_notify.
        let _ = std::io::Read::read(&mut tls, &mut [0u8; 1]);
        times.push(t.elapsed());
    }
    server
        .join()
        .map_err(|_| "server thread panicked".to_string())?;
    Ok(times)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(300);
    let mut groups: Vec<String> = args.collect();
    if groups.is_empty() {
        groups = vec!["X25519".into(), "X25519MLKEM768".into()];
    }
    println!(
        "{}; {n} full mutual TLS 1.3 handshakes per group",
        openssl::version::version()
    );
    for g in groups {
        match run(&g, n) {
            Ok(mut t) => {
                t.sort();
                let mean = t.iter().sum::<Duration>() / n as u32;
                println!(
                    "{g:>16}: median {:>7.3} ms, mean {:>7.3} ms",
                    t[n / 2].as_secs_f64() * 1e3,
                    mean.as_secs_f64() * 1e3
                );
            }
            Err(e) => println!("{g:>16}: {e}"),
        }
    }
}
