//! Why a rule or an identity selector is not accepted; each message says what to write
//! instead. The configuration prefixes it with `file: key:`, the admin socket answers it.

/// A rule (`[backends]`, `[groups]`) or an identity selector that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    /// Text without `=` that is not `any`.
    #[error("{0:?} is not a rule; write kind=value with kind one of cn, o, ou, dns, uri, email, ip, sha256, group, or \"any\"")]
    NotARule(String),
    /// `group=` inside `[groups]`.
    #[error("groups cannot contain group= rules")]
    NestedGroup,
    /// A group of `[groups]` without members.
    #[error("an empty group matches nobody")]
    EmptyGroup,
    /// `group=` with nothing after it.
    #[error("group= needs a group name")]
    NoGroupName,
    /// A `group=` naming no group of `[groups]`.
    #[error("group {0:?} is not defined under [groups]")]
    UndefinedGroup(String),
    /// A kind before `=` that is no attribute.
    #[error("unknown attribute {0:?}; use one of cn, o, ou, dns, uri, email, ip, sha256, group")]
    UnknownAttribute(String),
    /// `{}` as a rule.
    #[error("an empty table matches nothing; write \"any\" to allow every client")]
    EmptyTable,
    /// `kind=` with an empty value.
    #[error("{0}= needs a value")]
    NoValue(&'static str),
    /// A `dns=` wildcard other than a whole left-most label.
    #[error("dns={0:?}: `*` may only be the whole left-most label of a name, as in dns=*.example.org (RFC 6125: one label); to allow every client write \"any\"")]
    DnsWildcard(String),
    /// A `dns=` pattern with an empty label.
    #[error("dns={0:?} has an empty label (a leading dot or \"..\"); write a name such as db.example.org or *.example.org")]
    DnsEmptyLabel(String),
    /// A `sha256=` value that is not 64 hex digits.
    #[error("sha256={0:?} is not a SHA-256 fingerprint (64 hex digits, colons allowed); get one with `openssl x509 -noout -fingerprint -sha256 -in CERT`")]
    BadFingerprint(String),
    /// An `ip=` network that does not parse (the network type's own message).
    #[error("ip={0}")]
    BadNetwork(String),
    /// An `ip=` value that is no address, network or wildcard.
    #[error("ip={0:?} is not an IP address, CIDR (10.0.0.0/8) or wildcard")]
    BadIp(String),
    /// An empty identity selector.
    #[error("an empty identity selector matches nothing")]
    EmptySelector,
    /// `group=` as an identity selector.
    #[error("group= is not a selector here (the admin socket does not read [groups]); name an attribute of its members such as ou=dba")]
    GroupSelector,
    /// A lower-case kind before `=` in a selector that is no attribute.
    #[error("unknown attribute {attr:?} in {selector:?}; use one of cn, o, ou, dns, uri, email, ip, sha256, or a glob")]
    UnknownSelectorAttribute {
        /// The kind written.
        attr: String,
        /// The whole selector.
        selector: String,
    },
}
