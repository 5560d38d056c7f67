//! Sign-in with the organisation's identity provider: [`signer`] turns an ID token into a
//! short-lived client certificate, [`login`] is the client's side, [`oidc`] what both share
//! (discovery, keys, token verification).

pub mod login;
pub mod oidc;
pub mod signer;
pub mod store;
