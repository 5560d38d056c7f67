//! Getting an ID token from the provider: the authorization code flow with PKCE and a
//! loopback redirect on 127.0.0.1 (RFC 8252), or the device authorization grant (RFC 8628)
//! for machines without a browser. Both send the nonce that binds the token to the new key.

use super::LoginError;
use crate::authz::identity::printable;
use crate::http::client::Client;
use crate::http::serve::{reply, Limits, Request, Server};
use crate::http::{form, query_value};
use crate::signin::oidc::{pkce_challenge, random_token, Discovery};
use serde_json::Value;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// How long the user has to finish signing in.
pub(crate) const LOGIN_TIMEOUT: Duration = Duration::from_secs(300);

/// What both flows need.
pub(crate) struct FlowParams<'a> {
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
pub(crate) async fn code_flow(
    idp: &Client,
    p: &FlowParams<'_>,
    open_browser: bool,
) -> Result<String, LoginError> {
    let auth = p
        .discovery
        .authorization_endpoint
        .as_deref()
        .ok_or(LoginError::MissingEndpoint(
            "the provider has no authorization_endpoint; use --device",
        ))?;
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(LoginError::RedirectListen)?;
    let port = listener
        .local_addr()
        .map_err(LoginError::RedirectListen)?
        .port();
    let redirect = format!("http://127.0.0.1:{port}/callback");
    let (state, verifier) = (random_token(16), random_token(32));
    let query = form(&[
        ("response_type", "code"),
        ("client_id", p.client_id),
        ("redirect_uri", &redirect),
        ("scope", &p.scope),
        ("state", &state),
        ("nonce", p.nonce),
        ("code_challenge", &pkce_challenge(&verifier)),
        ("code_challenge_method", "S256"),
    ]);
    let sep = if auth.contains('?') { '&' } else { '?' };
    show_sign_in_url(&format!("{auth}{sep}{query}"), open_browser);
    let code = tokio::time::timeout(
        LOGIN_TIMEOUT,
        wait_for_code(listener, &state, &p.discovery.issuer),
    )
    .await
    .map_err(|_| LoginError::Timeout(LOGIN_TIMEOUT))??;
    redeem_code(idp, p, &code, &redirect, &verifier).await
}

/// Prints where to sign in, and opens it in a browser when asked.
fn show_sign_in_url(url: &str, open_browser: bool) {
    say(&format!("Open this URL in a browser to sign in:\n  {url}"));
    if open_browser {
        let _ = std::process::Command::new("xdg-open")
            .arg(url)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
    }
}

/// Exchanges the authorization `code` (with the PKCE verifier) for the ID token.
async fn redeem_code(
    idp: &Client,
    p: &FlowParams<'_>,
    code: &str,
    redirect: &str,
    verifier: &str,
) -> Result<String, LoginError> {
    let body = form(&[
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", redirect),
        ("client_id", p.client_id),
        ("code_verifier", verifier),
    ]);
    let resp = idp
        .post(
            token_endpoint(p)?,
            "application/x-www-form-urlencoded",
            body.as_bytes(),
        )
        .await?;
    id_token_of(resp.status, &json_of(&resp.body)?)
}

/// The provider's token endpoint, which both flows need.
fn token_endpoint<'a>(p: &FlowParams<'a>) -> Result<&'a str, LoginError> {
    p.discovery
        .token_endpoint
        .as_deref()
        .ok_or(LoginError::MissingEndpoint(
            "the provider has no token_endpoint",
        ))
}

/// A provider's answer as JSON.
fn json_of(body: &[u8]) -> Result<Value, LoginError> {
    serde_json::from_slice(body).map_err(LoginError::NotJson)
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
async fn wait_for_code(
    listener: TcpListener,
    state: &str,
    issuer: &str,
) -> Result<String, LoginError> {
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
        r = rx.recv() => r.unwrap_or(Err(LoginError::RedirectStopped)),
        _ = &mut serving => Err(LoginError::RedirectStopped),
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
) -> Option<Option<Result<String, LoginError>>> {
    if req.path() != "/callback" {
        return None;
    }
    let q = req.query();
    if query_value(q, "state").as_deref() != Some(state) {
        return Some(None);
    }
    Some(Some(if let Some(err) = query_value(q, "error") {
        let desc = query_value(q, "error_description").unwrap_or_default();
        Err(LoginError::SignInRefused {
            error: printable(&err),
            description: printable(&desc),
        })
    } else if query_value(q, "iss").is_some_and(|i| i != issuer) {
        Err(LoginError::OtherIssuer)
    } else {
        query_value(q, "code").ok_or(LoginError::NoCode)
    }))
}

fn id_token_of(status: u16, body: &Value) -> Result<String, LoginError> {
    let text = |k: &str| {
        body.get(k)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    if status != 200 {
        return Err(LoginError::TokenRefused {
            status,
            error: text("error"),
            description: text("error_description"),
        });
    }
    body.get("id_token")
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or(LoginError::NoIdToken)
}

/// What the device authorization endpoint granted.
struct DeviceGrant {
    device_code: String,
    /// Seconds between polls.
    interval: u64,
    /// Seconds the device code lives.
    expires_in: u64,
}

/// The device authorization grant: prints where to sign in and the code, then polls.
pub(crate) async fn device_flow(idp: &Client, p: &FlowParams<'_>) -> Result<String, LoginError> {
    let grant = authorize_device(idp, p).await?;
    poll_for_token(idp, p, grant).await
}

/// Asks the provider for a device code and shows the person where to enter it.
async fn authorize_device(idp: &Client, p: &FlowParams<'_>) -> Result<DeviceGrant, LoginError> {
    let endpoint =
        p.discovery
            .device_authorization_endpoint
            .as_deref()
            .ok_or(LoginError::MissingEndpoint(
                "the provider does not offer the device flow; run without --device",
            ))?;
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
        .await?;
    let da = json_of(&resp.body)?;
    let s = |k: &str| da.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    if resp.status != 200 || s("device_code").is_empty() {
        return Err(LoginError::DeviceRefused {
            status: resp.status,
            error: printable(&s("error")),
            description: printable(&s("error_description")),
        });
    }
    crate::signin::oidc::browser_url(&s("verification_uri"), "verification_uri")?;
    if !s("verification_uri_complete").is_empty() {
        crate::signin::oidc::browser_url(
            &s("verification_uri_complete"),
            "verification_uri_complete",
        )?;
    }
    say(&format!(
        "To sign in, visit {} and enter the code {}\n  or open {}",
        s("verification_uri"),
        printable(&s("user_code")),
        s("verification_uri_complete")
    ));
    Ok(DeviceGrant {
        device_code: s("device_code"),
        interval: da.get("interval").and_then(Value::as_u64).unwrap_or(5),
        expires_in: da.get("expires_in").and_then(Value::as_u64).unwrap_or(600),
    })
}

/// Polls the token endpoint at the granted pace until the person has signed in, the
/// provider refuses, or the code expires.
async fn poll_for_token(
    idp: &Client,
    p: &FlowParams<'_>,
    grant: DeviceGrant,
) -> Result<String, LoginError> {
    let mut interval = grant.interval.max(1);
    let lifetime = grant.expires_in.min(LOGIN_TIMEOUT.as_secs());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(lifetime);
    let token_endpoint = token_endpoint(p)?;
    loop {
        tokio::time::sleep(Duration::from_secs(interval)).await;
        if tokio::time::Instant::now() > deadline {
            return Err(LoginError::DeviceCodeExpired);
        }
        let body = form(&[
            ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
            ("device_code", &grant.device_code),
            ("client_id", p.client_id),
        ]);
        let resp = idp
            .post(
                token_endpoint,
                "application/x-www-form-urlencoded",
                body.as_bytes(),
            )
            .await?;
        let v = json_of(&resp.body)?;
        match v.get("error").and_then(Value::as_str) {
            Some("authorization_pending") => continue,
            Some("slow_down") => interval += 5,
            _ => return id_token_of(resp.status, &v),
        }
    }
}
