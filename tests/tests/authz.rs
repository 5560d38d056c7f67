//! Authorization by certificate identity, one backend per rule kind, each tried with an
//! identity it must allow and one it must deny. Every backend is a "banner" backend that greets
//! first, so a client that wrongly got through would see the greeting.

use std::net::SocketAddr;
use tunnel_core::pki::CertSpec;
use tunnel_tests::backend::round_trip;
use tunnel_tests::tls::{exchange, local_addr, TlsClient};
use tunnel_tests::*;

const BANNER: &[u8] = b"welcome to the backend\n";

struct Fixture {
    pki: Pki,
    gw: Gateway,
    backend: Backend,
    certs: Vec<(&'static str, Creds)>,
}

impl Fixture {
    fn creds(&self, who: &str) -> &Creds {
        &self
            .certs
            .iter()
            .find(|(n, _)| *n == who)
            .unwrap_or_else(|| panic!("no certificate {who}"))
            .1
    }

    /// Connects as `who` with SNI `backend`, sends a line, reads until closed.
    fn try_reach(&self, who: &str, backend: &str) -> (SocketAddr, Vec<u8>) {
        self.try_reach_as(self.creds(who), backend)
    }

    fn try_reach_as(&self, creds: &Creds, backend: &str) -> (SocketAddr, Vec<u8>) {
        let client = TlsClient::new(creds, &self.pki.ca_crt);
        match client.connect(self.gw.addr, Some(backend)) {
            Ok(mut s) => {
                let peer = local_addr(&s);
                let (got, _) = exchange(&mut s, b"ping\n");
                (peer, got)
            }
            Err(e) => panic!("TLS handshake failed on the client side: {e}"),
        }
    }

    fn allowed(&self, who: &str, backend: &str, rule: &str) {
        let before = self.backend.accepted();
        let (peer, got) = self.try_reach(who, backend);
        let mut want = BANNER.to_vec();
        want.extend_from_slice(b"ping\n");
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(&want),
            "{who} should reach {backend}"
        );
        let ev = self.gw.audit_for(peer);
        assert_eq!(field(&ev, "result"), "ok", "{ev}");
        assert_eq!(field(&ev, "backend"), backend, "{ev}");
        assert_subject(&ev, who);
        assert_eq!(field(&ev, "reason"), format!("allowed by {rule}"), "{ev}");
        assert_eq!(self.backend.accepted(), before + 1);
    }

    fn denied(&self, who: &str, backend: &str) {
        let before = self.backend.accepted();
        let (peer, got) = self.try_reach(who, backend);
        assert!(
            got.is_empty(),
            "{who} must not reach {backend}, got {:?}",
            String::from_utf8_lossy(&got)
        );
        let ev = self.gw.audit_for(peer);
        assert_eq!(field(&ev, "result"), "denied", "{ev}");
        assert_eq!(field(&ev, "backend"), backend, "{ev}");
        assert_eq!(
            field(&ev, "reason"),
            format!("no allow rule of backend {backend:?} matches"),
            "{ev}"
        );
        assert_subject(&ev, who);
        assert_eq!(self.backend.accepted(), before, "the backend was dialled");
        // Positive control: the gateway still serves a client that may reach `any`.
        self.allowed("carol", "any", "any");
    }
}

/// The audit subject starts with the client's CN (`CN=alice,OU=dba,O=Example`).
fn assert_subject(ev: &serde_json::Value, cn: &str) {
    let subject = field(ev, "subject");
    let want = format!("CN={cn}");
    assert!(
        subject == want || subject.starts_with(&format!("{want},")),
        "subject {subject:?} is not {want}: {ev}"
    );
}

fn spec(cn: &str) -> CertSpec {
    CertSpec::client(cn)
}

fn fixture() -> Fixture {
    let pki = Pki::new();
    let alice = pki.issue(
        "alice",
        &CertSpec {
            o: vec!["Example".into()],
            ou: vec!["dba".into()],
            dns: vec!["Alice.Example.org".into()],
            uri: vec!["spiffe://example.org/ns/prod/sa/alice".into()],
            email: vec!["alice@example.org".into()],
            ip: vec!["10.1.2.3".parse().unwrap()],
            ..spec("alice")
        },
    );
    let bob = pki.issue(
        "bob",
        &CertSpec {
            o: vec!["Other".into()],
            ou: vec!["web".into()],
            dns: vec!["bob.example.org".into()],
            uri: vec!["spiffe://example.org/ns/dev/sa/bob".into()],
            email: vec!["bob@example.org".into()],
            ip: vec!["10.2.0.1".parse().unwrap()],
            ..spec("bob")
        },
    );
    let carol = pki.client("carol");
    let webby = pki.issue(
        "webby",
        &CertSpec {
            o: vec!["Example".into()],
            ou: vec!["web".into()],
            ..spec("webby")
        },
    );
    let ops = pki.client("ops-7");
    let backend = Backend::banner(BANNER);
    // Upper case with colons, as `openssl x509 -fingerprint -sha256` prints it.
    let fp: Vec<String> = alice
        .sha256()
        .to_uppercase()
        .as_bytes()
        .chunks(2)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect();
    let a = backend.addr;
    let mut body = String::from("[groups]\nstaff = [\"cn=carol\", \"ou=dba\"]\n");
    for (name, allow) in [
        ("cn", "\"cn=alice\"".to_string()),
        ("o", "\"o=Example\"".into()),
        ("ou", "\"ou=dba\"".into()),
        ("dns", "\"dns=alice.EXAMPLE.org\"".into()),
        (
            "uri",
            "\"uri=spiffe://example.org/ns/prod/sa/alice\"".into(),
        ),
        ("email", "\"email=Alice@Example.org\"".into()),
        ("ip", "\"ip=10.1.0.0/16\"".into()),
        ("ip-exact", "\"ip=10.2.0.1\"".into()),
        ("sha256", format!("\"sha256={}\"", fp.join(":"))),
        ("group", "\"group=staff\"".into()),
        ("any", "\"any\"".into()),
        ("wildcard", "\"uri=spiffe://example.org/ns/prod/*\"".into()),
        ("wildcard-cn", "\"cn=ops-*\"".into()),
        ("table", "{ ou = \"web\", o = \"Example\" }".into()),
    ] {
        body += &backend_toml(name, a, &allow);
    }
    let gw = Gateway::start(&pki, &body);
    Fixture {
        pki,
        gw,
        backend,
        certs: vec![
            ("alice", alice),
            ("bob", bob),
            ("carol", carol),
            ("webby", webby),
            ("ops-7", ops),
        ],
    }
}

#[test]
fn cn_rule() {
    let f = fixture();
    f.allowed("alice", "cn", "cn=alice");
    f.denied("bob", "cn");
}

#[test]
fn o_and_ou_rules() {
    let f = fixture();
    f.allowed("alice", "o", "o=Example");
    f.denied("bob", "o");
    f.allowed("alice", "ou", "ou=dba");
    f.denied("bob", "ou");
}

#[test]
fn dns_rule_ignores_case() {
    let f = fixture();
    f.allowed("alice", "dns", "dns=alice.example.org");
    f.denied("bob", "dns");
}

#[test]
fn uri_rule() {
    let f = fixture();
    f.allowed("alice", "uri", "uri=spiffe://example.org/ns/prod/sa/alice");
    f.denied("bob", "uri");
}

#[test]
fn email_rule_ignores_case() {
    let f = fixture();
    f.allowed("alice", "email", "email=alice@example.org");
    f.denied("bob", "email");
}

#[test]
fn ip_rules_cidr_and_exact() {
    let f = fixture();
    f.allowed("alice", "ip", "ip=10.1.0.0/16");
    f.denied("bob", "ip");
    f.allowed("bob", "ip-exact", "ip=10.2.0.1");
    f.denied("alice", "ip-exact");
    // No IP SAN at all.
    f.denied("carol", "ip");
}

#[test]
fn sha256_rule_pins_one_certificate() {
    let f = fixture();
    let fp = f.creds("alice").sha256();
    f.allowed("alice", "sha256", &format!("sha256={fp}"));
    f.denied("bob", "sha256");
    // Same subject and attributes, new key: a different certificate.
    let again = f.pki.issue(
        "alice-again",
        &CertSpec {
            o: vec!["Example".into()],
            ..spec("alice")
        },
    );
    let (peer, got) = f.try_reach_as(&again, "sha256");
    assert!(
        got.is_empty(),
        "a re-issued certificate passed a sha256 pin"
    );
    let ev = f.gw.audit_for(peer);
    assert_eq!(field(&ev, "result"), "denied", "{ev}");
    assert_eq!(
        field(&ev, "reason"),
        "no allow rule of backend \"sha256\" matches",
        "{ev}"
    );
    f.allowed("alice", "sha256", &format!("sha256={fp}"));
}

#[test]
fn group_rule_matches_any_member_rule() {
    let f = fixture();
    f.allowed("carol", "group", "group=staff"); // by cn=carol
    f.allowed("alice", "group", "group=staff"); // by ou=dba
    f.denied("bob", "group");
}

#[test]
fn any_rule_admits_every_verified_client_only() {
    let f = fixture();
    f.allowed("bob", "any", "any");
    f.allowed("webby", "any", "any");
    // "any" still means "verified": a client of another CA never gets to authorization.
    let rogue = Pki::named("Rogue CA");
    let mallory = rogue.client("mallory");
    let before = f.backend.accepted();
    let (peer, got) = f.try_reach_as(&mallory, "any");
    assert!(got.is_empty());
    let ev = f.gw.audit_for(peer);
    assert_eq!(field(&ev, "result"), "handshake_failed", "{ev}");
    assert_eq!(
        field(&ev, "reason"),
        "client certificate rejected: unable to get local issuer certificate",
        "{ev}"
    );
    assert_eq!(f.backend.accepted(), before);
    f.allowed("carol", "any", "any");
}

#[test]
fn wildcard_rules() {
    let f = fixture();
    f.allowed("alice", "wildcard", "uri=spiffe://example.org/ns/prod/*");
    f.denied("bob", "wildcard"); // spiffe://example.org/ns/dev/...
    f.allowed("ops-7", "wildcard-cn", "cn=ops-*");
    f.denied("alice", "wildcard-cn");
}

#[test]
fn inline_table_needs_every_attribute() {
    let f = fixture();
    f.allowed("webby", "table", "{ o=Example, ou=web }");
    f.denied("bob", "table"); // ou=web but o=Other
    f.denied("alice", "table"); // o=Example but ou=dba
}

#[test]
fn denied_through_the_agent_closes_the_local_connection() {
    let f = fixture();
    let agent = Agent::start(&f.pki, f.gw.addr, f.creds("bob"), &["cn", "any"]);
    // Allowed tunnel first, so the denial below cannot be a broken agent.
    let mut s = tunnel_tests::backend::connect(agent.listens[1]);
    let (got, err) = round_trip(&mut s, b"hello\n");
    assert!(err.is_none(), "{err:?}");
    assert_eq!(got, [BANNER, b"hello\n"].concat());

    let before = f.backend.accepted();
    let mut s = tunnel_tests::backend::connect(agent.listens[0]);
    let started = std::time::Instant::now();
    let (got, _) = round_trip(&mut s, b"hello\n");
    assert!(got.is_empty(), "denied client got {got:?}");
    assert!(started.elapsed() < PROMPT);
    let ev = f.gw.wait_for_audit(PROMPT, |e| field(e, "backend") == "cn");
    assert_eq!(field(&ev, "result"), "denied", "{ev}");
    assert_eq!(
        field(&ev, "reason"),
        "no allow rule of backend \"cn\" matches",
        "{ev}"
    );
    assert_subject(&ev, "bob");
    assert_eq!(f.backend.accepted(), before);
    // Positive control: the allowed tunnel of the same agent still works.
    let mut s = tunnel_tests::backend::connect(agent.listens[1]);
    let (got, err) = round_trip(&mut s, b"again\n");
    assert!(err.is_none(), "{err:?}");
    assert_eq!(got, [BANNER, b"again\n"].concat());
}
