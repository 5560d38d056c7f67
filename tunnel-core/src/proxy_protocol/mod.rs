//! PROXY protocol, both ways, on the `ppp` crate: [`inbound`] reads the header a load
//! balancer puts before the TLS handshake on a `[[listener]]` with `proxy_protocol = true`;
//! [`outbound`] writes the v2 header (address and identity TLVs) the gateway sends to a
//! backend with `proxy_protocol = "v2"`.

pub mod inbound;
pub(crate) mod outbound;
