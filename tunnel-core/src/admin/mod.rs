//! Operator control over a running service through its admin socket (issue 11): the
//! line-delimited JSON protocol ([`protocol`]), the peer-credential-checked Unix socket
//! ([`socket`]), the gateway's live-session registry ([`sessions`]) and request handler
//! ([`gateway`]), the client agent's `status` ([`agent`]), and the command-line side ([`cli`]).

pub(crate) mod agent;
pub mod cli;
pub mod gateway;
pub mod protocol;
pub(crate) mod sessions;
pub(crate) mod socket;

pub use protocol::{Request, Response};
pub use sessions::{Cut, Limits, NotAdmitted, SessionGuard, SessionInfo, Sessions};
pub use socket::{Access, Handler, Peer};
