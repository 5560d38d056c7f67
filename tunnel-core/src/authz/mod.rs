//! Who the client is and what it may reach: [`identity`] reads the attributes rules match on
//! from a verified certificate; [`policy`] decides which backend an identity may reach.

pub mod identity;
pub mod policy;
