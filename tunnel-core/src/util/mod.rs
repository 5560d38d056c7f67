//! Small helpers every part uses: [`cidr`] networks, DER encoding, [`sync`] the lock
//! policy, [`time`] wall-clock conversions.

pub(crate) mod cidr;
pub(crate) mod der;
pub(crate) mod sync;
pub mod time;
