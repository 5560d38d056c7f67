//! Announcing requests and decisions at `notify_url`: a JSON POST compatible with Slack and
//! Mattermost incoming webhooks (`{"text": …}`) plus structured fields, sent from a task of
//! its own so that a slow or failing receiver never holds up a request. Each notice is tried
//! [`ATTEMPTS`] times with doubling waits from [`FIRST_RETRY`]; failures are logged and
//! counted ([`Notifier::failures`]).

use crate::http::client::Client;
use crate::signin::signer::config::roles::Role;
use crate::signin::store::requests::AccessRequest;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Tries per notice.
pub(crate) const ATTEMPTS: u32 = 5;
/// Wait before the first retry; doubled after each.
pub(crate) const FIRST_RETRY: Duration = Duration::from_secs(1);

/// The body posted to the webhook.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Notice {
    /// One line for people (with the command to approve).
    pub text: String,
    /// `requested`, `approved`, `denied` or `expired`.
    pub event: String,
    /// The request's id.
    pub id: String,
    /// The requester's email.
    pub requester: String,
    /// The role.
    pub role: String,
    /// Seconds asked for.
    pub duration: i64,
    /// The requester's reason.
    pub reason: String,
    /// Who decided (decisions only).
    #[serde(default)]
    pub approver: Option<String>,
    /// The groups that may decide (requests only).
    #[serde(default)]
    pub approver_groups: Vec<String>,
    /// The command that approves it (requests only).
    #[serde(default)]
    pub approve_command: Option<String>,
}

/// Sends notices, when a `notify_url` is configured.
pub(crate) struct Notifier {
    target: Option<(String, Client)>,
    failures: Arc<AtomicU64>,
}

impl Notifier {
    /// A notifier for `url` (none: notices are dropped).
    pub(crate) fn new(url: Option<String>) -> Notifier {
        let target = url.and_then(|u| match Client::new(None) {
            Ok(c) => Some((u, c)),
            Err(e) => {
                tracing::warn!(error = %e, "notify_url: cannot load the system trust store; notices are off");
                None
            }
        });
        Notifier {
            target,
            failures: Arc::default(),
        }
    }

    /// Notices given up on so far.
    #[cfg(test)]
    pub(crate) fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// A new request.
    pub(crate) fn requested(&self, r: &AccessRequest, role: &Role) {
        let cmd = format!("tunnel-client approve {}", r.id);
        let text = format!(
            "{} requests {} for {} ({}). Approvers ({}): `{cmd}`",
            r.requester,
            r.role,
            humantime::format_duration(Duration::from_secs(r.duration.max(0) as u64)),
            if r.reason.is_empty() {
                "no reason given"
            } else {
                &r.reason
            },
            role.approvers.join(", ")
        );
        self.send(Notice {
            approver_groups: role.approvers.clone(),
            approve_command: Some(cmd),
            ..notice(r, "requested", text)
        });
    }

    /// A decision (`approved` or `denied`).
    pub(crate) fn decided(&self, r: &AccessRequest, approver: &str, action: &str, reason: &str) {
        let text = format!(
            "{approver} {action} {}'s request {} for {}{}",
            r.requester,
            r.id,
            r.role,
            if reason.is_empty() {
                String::new()
            } else {
                format!(": {reason}")
            }
        );
        self.send(Notice {
            approver: Some(approver.to_string()),
            ..notice(r, action, text)
        });
    }

    /// An expiry (`what`: `request` or `grant`).
    pub(crate) fn expired(&self, r: &AccessRequest, what: &str) {
        let text = format!(
            "{}'s {what} {} for {} has expired",
            r.requester, r.id, r.role
        );
        self.send(notice(r, "expired", text));
    }

    fn send(&self, n: Notice) {
        let Some((url, client)) = self.target.clone() else {
            return;
        };
        let Ok(body) = serde_json::to_vec(&n) else {
            return;
        };
        let failures = self.failures.clone();
        tokio::spawn(async move {
            deliver(&client, &url, &body, &n.id, FIRST_RETRY, &failures).await;
        });
    }
}

fn notice(r: &AccessRequest, event: &str, text: String) -> Notice {
    Notice {
        text,
        event: event.to_string(),
        id: r.id.clone(),
        requester: r.requester.clone(),
        role: r.role.clone(),
        duration: r.duration,
        reason: r.reason.clone(),
        approver: None,
        approver_groups: Vec::new(),
        approve_command: None,
    }
}

/// Posts `body` until the receiver answers 2xx, at most [`ATTEMPTS`] times, waiting
/// `first_retry`, then twice as long each time. Returns whether it was delivered.
pub(crate) async fn deliver(
    client: &Client,
    url: &str,
    body: &[u8],
    id: &str,
    first_retry: Duration,
    failures: &AtomicU64,
) -> bool {
    let mut wait = first_retry;
    for attempt in 1..=ATTEMPTS {
        let why = match client.post(url, "application/json", body).await {
            Ok(r) if (200..300).contains(&r.status) => return true,
            Ok(r) => format!("status {}", r.status),
            Err(e) => e.to_string(),
        };
        if attempt == ATTEMPTS {
            let total = failures.fetch_add(1, Ordering::Relaxed) + 1;
            tracing::warn!(id, error = %why, attempts = ATTEMPTS, failures_total = total, "access notice not delivered; giving up");
            return false;
        }
        tracing::debug!(id, error = %why, attempt, "access notice not delivered; retrying");
        tokio::time::sleep(wait).await;
        wait *= 2;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A receiver that answers `statuses` in turn (then 200) and hands over each body.
    async fn receiver(statuses: Vec<u16>) -> (String, tokio::sync::mpsc::Receiver<String>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", l.local_addr().unwrap());
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            let mut statuses = statuses.into_iter();
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                // Read the head, then Content-Length bytes of body.
                let body = loop {
                    let n = s.read(&mut chunk).await.unwrap();
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    if let Some(i) = text.find("\r\n\r\n") {
                        let len: usize = text
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse().unwrap())
                            })
                            .unwrap_or(0);
                        if buf.len() >= i + 4 + len {
                            break text[i + 4..i + 4 + len].to_string();
                        }
                    }
                };
                let status = statuses.next().unwrap_or(200);
                let _ = tx.send(body).await;
                let resp = format!(
                    "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
                let _ = s.write_all(resp.as_bytes()).await;
            }
        });
        (url, rx)
    }

    #[tokio::test]
    async fn a_failing_receiver_is_retried_with_back_off_then_counted() {
        let (url, mut bodies) = receiver(vec![500, 503]).await;
        let client = Client::new(None).unwrap();
        let failures = AtomicU64::new(0);
        let started = std::time::Instant::now();
        let first = Duration::from_millis(50);
        assert!(deliver(&client, &url, b"{\"text\":\"x\"}", "id", first, &failures).await);
        assert!(started.elapsed() >= first * 3, "waited 50 ms, then 100 ms");
        for _ in 0..3 {
            assert_eq!(bodies.recv().await.unwrap(), "{\"text\":\"x\"}");
        }
        assert_eq!(failures.load(Ordering::Relaxed), 0);
        let (url, _bodies) = receiver(vec![500; ATTEMPTS as usize]).await;
        let first = Duration::from_millis(1);
        assert!(!deliver(&client, &url, b"{}", "id", first, &failures).await);
        assert_eq!(failures.load(Ordering::Relaxed), 1);
        // Nobody listening at all: counted too.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let gone = format!("http://{}/", l.local_addr().unwrap());
        drop(l);
        assert!(!deliver(&client, &gone, b"{}", "id", first, &failures).await);
        assert_eq!(failures.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn a_request_is_announced_with_the_command_to_approve_it() {
        let (url, mut bodies) = receiver(vec![]).await;
        let n = Notifier::new(Some(url));
        let r = AccessRequest {
            id: "0123456789ab".into(),
            requester: "bob@example.com".into(),
            role: "db-admin".into(),
            duration: 7200,
            reason: "INC-4711".into(),
            key_sha256: String::new(),
            created_at: 0,
            state: crate::signin::store::requests::RequestState::Pending,
            decided_at: None,
            decisions: vec![],
            grant: None,
        };
        let role = Role {
            name: "db-admin".into(),
            grants: vec!["dba".into()],
            requesters: vec![],
            approvers: vec!["leads".into()],
            approvals: 1,
            max_duration: Duration::from_secs(7200),
            require_reason: true,
        };
        n.requested(&r, &role);
        let got: Notice = serde_json::from_str(&bodies.recv().await.unwrap()).unwrap();
        assert_eq!(
            got.text,
            "bob@example.com requests db-admin for 2h (INC-4711). Approvers (leads): `tunnel-client approve 0123456789ab`"
        );
        assert_eq!(
            got.approve_command.as_deref(),
            Some("tunnel-client approve 0123456789ab")
        );
        assert_eq!((got.event.as_str(), got.duration), ("requested", 7200));
        assert_eq!(n.failures(), 0);
    }
}
