//! Getting an ID token from the provider: the authorization code flow with PKCE and a
//! loopback redirect on 127.0.0.1 (RFC 8252), or the device authorization grant (RFC 8628)
//! for machines without a browser. Both send the nonce that binds the token to the new key.

use crate::http::client::Client;
use crate::http::serve::{reply, Limits, Request, Server};
use crate::http::{form, query_value};
use crate::identity::printable;
use crate::oidc::{pkce_challenge, random_token, Discovery};
use serde_json::Value;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// How long the user has to finish signing in.
pub const LOGIN_TIMEOUT: Duration = Duration::from_secs(300);

/// What both flows need.
pub struct FlowParams<'a> {
    /// The provider's endpoints.
    pub discovery: &'a Discovery,
    /// The client id.
    pub client_id: &'a str,
    /// Space-separated scopes.
    pub scope: String,
    /// The key-binding nonce.
    pub nonce: &'a str,
}

/// Authorization code + PKCE; prints the URL (and opens a browser when `open_browser`).
pub async fn code_flow(
    idp: &Client,
    p: &FlowParams<'_>,
    open_browser: bool,
) -> Result<String, String> {
    let auth = p
        .discovery
        .authorization_endpoint
        .as_deref()
        .ok_or("the provider has no authorization_endpoint; use --device")?;
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("cannot listen on 127.0.0.1 for the redirect: {e}"))?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    let redirect = format!("http://127.0.0.1:{port}/callback");
    let (state, verifier) = (random_token(16), random_token(32));
    let challenge = pkce_challenge(&verifier);
    let query = form(&[
        ("response_type", "code"),
        ("client_id", p.client_id),
        ("redirect_uri", &redirect),
        ("scope", &p.scope),
        ("state", &state),
        ("nonce", p.nonce),
        ("code_challenge", &challenge),
        ("code_challenge_method", "S256"),
    ]);
    let sep = if auth.contains('?') { '&' } else { '?' };
    let url = format!("{auth}{sep}{query}");
    say(&format!("Open this URL in a browser to sign in:\n  {url}"));
    if open_browser {
        let _ = std::process::Command::new("xdg-open")
            .arg(&url)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
    }
    let code = tokio::time::timeout(
        LOGIN_TIMEOUT,
        wait_for_code(listener, &state, &p.discovery.issuer),
    )
    .await
    .map_err(|_| {
        format!(
            "no sign-in within {}",
            humantime::format_duration(LOGIN_TIMEOUT)
        )
    })??;
    let token_endpoint = p
        .discovery
        .token_endpoint
        .as_deref()
        .ok_or("the provider has no token_endpoint")?;
    let body = form(&[
        ("grant_type", "authorization_code"),
        ("code", &code),
        ("redirect_uri", &redirect),
        ("client_id", p.client_id),
        ("code_verifier", &verifier),
    ]);
    let resp = idp
        .post(
            token_endpoint,
            "application/x-www-form-urlencoded",
            body.as_bytes(),
        )
        .await
        .map_err(|e| e.to_string())?;
    id_token_of(resp.status, &resp.json()?)
}

fn say(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}");
    let _ = out.flush();
}

/// The redirect listener's limits: the browser sends one small GET. Any local user can
/// connect too, so connections are served concurrently with short deadlines, and one that
/// sends nothing cannot hold up the browser's.
const CALLBACK_LIMITS: Limits = Limits {
    max_open: 32,
    max_per_source: 32,
    handshake: Duration::from_secs(5),
    head: Duration::from_secs(5),
    total: Duration::from_secs(10),
    max_head: 16 * 1024,
    max_body: 0,
};

/// Serves the redirect listener until a callback carrying this login's `state` arrives, and
/// returns its code (or the provider's refusal). Callbacks with another state (or none) are
/// answered, logged and ignored: only the browser that started this login knows the state,
/// so nobody else can end the wait, with a code or with an error.
async fn wait_for_code(listener: TcpListener, state: &str, issuer: &str) -> Result<String, String> {
    let (tx, mut rx) = tokio::sync::mpsc::channel(1);
    let (state, issuer) = (state.to_string(), issuer.to_string());
    let handler = move |req: Request| {
        let (tx, outcome) = (tx.clone(), callback_outcome(&req, &state, &issuer));
        async move {
            let Some(result) = outcome else {
                return reply(404, "text/plain", "not found\n");
            };
            let Some(result) = result else {
                // `login` has no log subscriber: the person reads stderr.
                eprintln!(
                    "warning: ignored a request from {} to the sign-in redirect: its state is not this login's",
                    req.peer
                );
                return reply(
                    400,
                    "text/plain; charset=utf-8",
                    "This redirect is not for the sign-in in progress.\n",
                );
            };
            let (status, page) = match &result {
                Ok(_) => (
                    200,
                    "Signed in. You can close this window and return to the terminal.\n",
                ),
                Err(_) => (400, "Sign-in failed; see the terminal.\n"),
            };
            let _ = tx.try_send(result);
            reply(status, "text/plain; charset=utf-8", page)
        }
    };
    let stop = CancellationToken::new();
    let server = Server::new(listener, None, CALLBACK_LIMITS);
    let serving = server.run(Arc::new(handler), stop.clone(), Duration::from_secs(2));
    tokio::pin!(serving);
    let result = tokio::select! {
        r = rx.recv() => r.unwrap_or_else(|| Err("the redirect listener stopped".to_string())),
        _ = &mut serving => Err("the redirect listener stopped".to_string()),
    };
    // Let the browser have its page before the listener goes.
    stop.cancel();
    serving.await;
    result
}

/// What a request to the redirect listener means: `None` when it is not the callback path,
/// `Some(None)` when its state is not this login's, else the code or the refusal.
fn callback_outcome(
    req: &Request,
    state: &str,
    issuer: &str,
) -> Option<Option<Result<String, String>>> {
    if req.path() != "/callback" {
        return None;
    }
    let q = req.query();
    if query_value(q, "state").as_deref() != Some(state) {
        return Some(None);
    }
    Some(Some(if let Some(err) = query_value(q, "error") {
        let desc = query_value(q, "error_description").unwrap_or_default();
        Err(format!(
            "the provider refused the sign-in: {} {}",
            printable(&err),
            printable(&desc)
        ))
    } else if query_value(q, "iss").is_some_and(|i| i != issuer) {
        Err("the redirect names another issuer; start again".to_string())
    } else {
        query_value(q, "code").ok_or_else(|| "the redirect carries no code".to_string())
    }))
}

fn id_token_of(status: u16, body: &Value) -> Result<String, String> {
    if status != 200 {
        return Err(format!(
            "the provider's token endpoint answered {status}: {} {}",
            body.get("error").and_then(Value::as_str).unwrap_or(""),
            body.get("error_description")
                .and_then(Value::as_str)
                .unwrap_or("")
        ));
    }
    body.get("id_token")
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| {
            "the token response has no id_token; is \"openid\" in the scopes?".to_string()
        })
}

/// The device authorization grant: prints where to sign in and the code, then polls.
pub async fn device_flow(idp: &Client, p: &FlowParams<'_>) -> Result<String, String> {
    let endpoint = p
        .discovery
        .device_authorization_endpoint
        .as_deref()
        .ok_or("the provider does not offer the device flow; run without --device")?;
    let body = form(&[
        ("client_id", p.client_id),
        ("scope", &p.scope),
        ("nonce", p.nonce),
    ]);
    let resp = idp
        .post(
            endpoint,
            "application/x-www-form-urlencoded",
            body.as_bytes(),
        )
        .await
        .map_err(|e| e.to_string())?;
    let da = resp.json()?;
    let s = |k: &str| da.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    if resp.status != 200 || s("device_code").is_empty() {
        return Err(format!(
            "device authorization refused ({}): {} {}",
            resp.status,
            printable(&s("error")),
            printable(&s("error_description"))
        ));
    }
    crate::oidc::browser_url(&s("verification_uri"), "verification_uri")?;
    if !s("verification_uri_complete").is_empty() {
        crate::oidc::browser_url(&s("verification_uri_complete"), "verification_uri_complete")?;
    }
    say(&format!(
        "To sign in, visit {} and enter the code {}\n  or open {}",
        s("verification_uri"),
        printable(&s("user_code")),
        s("verification_uri_complete")
    ));
    let mut interval = da
        .get("interval")
        .and_then(Value::as_u64)
        .unwrap_or(5)
        .max(1);
    let expires = da.get("expires_in").and_then(Value::as_u64).unwrap_or(600);
    let deadline =
        tokio::time::Instant::now() + Duration::from_secs(expires.min(LOGIN_TIMEOUT.as_secs()));
    let token_endpoint = p
        .discovery
        .token_endpoint
        .as_deref()
        .ok_or("the provider has no token_endpoint")?;
    let device_code = s("device_code");
    loop {
        tokio::time::sleep(Duration::from_secs(interval)).await;
        if tokio::time::Instant::now() > deadline {
            return Err(
                "the device code expired before the sign-in finished; run login again".into(),
            );
        }
        let body = form(&[
            ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
            ("device_code", &device_code),
            ("client_id", p.client_id),
        ]);
        let resp = idp
            .post(
                token_endpoint,
                "application/x-www-form-urlencoded",
                body.as_bytes(),
            )
            .await
            .map_err(|e| e.to_string())?;
        let v = resp.json()?;
        match v.get("error").and_then(Value::as_str) {
            Some("authorization_pending") => continue,
            Some("slow_down") => interval += 5,
            _ => return id_token_of(resp.status, &v),
        }
    }
}
