//! Authorization: which identity may reach which backend.
//!
//! Rules are written `kind=pattern` (`cn=alice`, `uri=spiffe://example.org/*`), `group=NAME`,
//! `any`, or an inline table whose attributes must all match (`{ ou = "web", o = "Example" }`).
//! A client may reach a backend when any one rule of the backend's `allow` matches. Deny by
//! default: an unknown backend, or no matching rule, is refused.

mod compile;
mod dns;
mod error;
mod selector;

pub use error::RuleError;
pub use selector::IdentitySelector;

use crate::authz::identity::Identity;
use crate::util::cidr::Cidr;
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::IpAddr;

/// A rule as written in the file: a string or an inline table.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum RawRule {
    /// `"cn=alice"`, `"group=dba"`, `"any"`.
    Text(String),
    /// `{ ou = "web", o = "Example" }`: every attribute must match.
    Table(BTreeMap<String, String>),
}

/// The identity attribute a matcher looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attr {
    /// Subject common name.
    Cn,
    /// Subject organization.
    O,
    /// Subject organizational unit.
    Ou,
    /// SAN DNS name (case-insensitive).
    Dns,
    /// SAN URI.
    Uri,
    /// SAN or subject email (case-insensitive).
    Email,
    /// SAN IP address: exact, CIDR (`10.0.0.0/8`) or wildcard text.
    Ip,
    /// SHA-256 fingerprint of the DER certificate (hex, colons optional).
    Sha256,
}

impl Attr {
    fn parse(s: &str) -> Option<Attr> {
        Some(match s {
            "cn" => Attr::Cn,
            "o" => Attr::O,
            "ou" => Attr::Ou,
            "dns" => Attr::Dns,
            "uri" => Attr::Uri,
            "email" => Attr::Email,
            "ip" => Attr::Ip,
            "sha256" => Attr::Sha256,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Attr::Cn => "cn",
            Attr::O => "o",
            Attr::Ou => "ou",
            Attr::Dns => "dns",
            Attr::Uri => "uri",
            Attr::Email => "email",
            Attr::Ip => "ip",
            Attr::Sha256 => "sha256",
        }
    }
}

/// One `attr=pattern` test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matcher {
    attr: Attr,
    pattern: String,
    cidr: Option<Cidr>,
}

impl Matcher {
    fn new(attr: Attr, pattern: &str) -> Result<Matcher, RuleError> {
        let pattern = pattern.trim();
        if pattern.is_empty() {
            return Err(RuleError::NoValue(attr.name()));
        }
        let mut m = Matcher {
            attr,
            pattern: pattern.to_string(),
            cidr: None,
        };
        match attr {
            Attr::Dns => {
                m.pattern = pattern.to_ascii_lowercase();
                dns::check_pattern(&m.pattern)?;
            }
            Attr::Email => m.pattern = pattern.to_ascii_lowercase(),
            Attr::Sha256 => {
                let p: String = pattern.chars().filter(|c| *c != ':').collect();
                let p = p.to_ascii_lowercase();
                if p != "*" && (p.len() != 64 || !p.bytes().all(|c| c.is_ascii_hexdigit())) {
                    return Err(RuleError::BadFingerprint(pattern.to_string()));
                }
                m.pattern = p;
            }
            Attr::Ip => {
                if pattern.contains('/') {
                    let net = pattern.parse::<Cidr>().map_err(RuleError::BadNetwork)?;
                    m.cidr = Some(net);
                } else if !pattern.contains('*') && pattern.parse::<IpAddr>().is_err() {
                    return Err(RuleError::BadIp(pattern.to_string()));
                }
            }
            _ => {}
        }
        Ok(m)
    }

    /// Whether any value of the attribute in `id` matches.
    pub fn matches(&self, id: &Identity) -> bool {
        let any = |vals: &[String], fold: bool| {
            vals.iter().any(|v| {
                if fold {
                    glob(&self.pattern, &v.to_ascii_lowercase())
                } else {
                    glob(&self.pattern, v)
                }
            })
        };
        match self.attr {
            Attr::Cn => any(&id.cn, false),
            Attr::O => any(&id.o, false),
            Attr::Ou => any(&id.ou, false),
            Attr::Dns => id.dns.iter().any(|d| dns::matches(&self.pattern, d)),
            Attr::Uri => any(&id.uri, false),
            Attr::Email => any(&id.email, true),
            Attr::Sha256 => !id.sha256.is_empty() && glob(&self.pattern, &id.sha256),
            Attr::Ip => id.ip.iter().any(|ip| match &self.cidr {
                Some(net) => net.contains_exactly(*ip),
                None => match self.pattern.parse::<IpAddr>() {
                    Ok(want) => want == *ip,
                    Err(_) => glob(&self.pattern, &ip.to_string()),
                },
            }),
        }
    }
}

impl Matcher {
    /// Whether this test passes for every value its attribute can have (`cn=*`,
    /// `sha256=*`, `ip=0.0.0.0/0`...): then it only asks that the attribute be present.
    fn matches_everything(&self) -> bool {
        match &self.cidr {
            Some(net) => net.prefix_len() == 0,
            None => self.pattern.chars().all(|c| c == '*'),
        }
    }
}

impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.attr.name(), self.pattern)
    }
}

/// A compiled rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    /// Every verified client.
    Any,
    /// One attribute test.
    Attr(Matcher),
    /// Membership of a `[groups]` entry.
    Group(String),
    /// Every part must match (an inline table).
    All(Vec<Rule>),
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rule::Any => f.write_str("any"),
            Rule::Attr(m) => write!(f, "{m}"),
            Rule::Group(g) => write!(f, "group={g}"),
            Rule::All(parts) => {
                f.write_str("{ ")?;
                for (i, p) in parts.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{p}")?;
                }
                f.write_str(" }")
            }
        }
    }
}

impl Rule {
    /// Whether this rule lets through (nearly) every verified client, so that `any` would
    /// say the same more honestly.
    fn matches_everything(&self) -> bool {
        match self {
            Rule::Any | Rule::Group(_) => false,
            Rule::Attr(m) => m.matches_everything(),
            Rule::All(parts) => parts.iter().all(Rule::matches_everything),
        }
    }
}

/// The outcome of an authorization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Allowed to `backend` by `rule`.
    Allow {
        /// Backend name.
        backend: String,
        /// The rule that matched, as text.
        rule: String,
    },
    /// The backend exists but no rule matches.
    Deny {
        /// Backend name.
        backend: String,
    },
    /// The identity is refused whatever the rules say (e.g. several subject CNs).
    Refused {
        /// Backend name.
        backend: String,
        /// Why, for the audit log.
        reason: String,
    },
    /// No SNI and no default backend, or an SNI that names no backend.
    UnknownBackend {
        /// The SNI sent, if any.
        sni: Option<String>,
    },
}

/// Compiled rules for every backend.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    groups: HashMap<String, Vec<Rule>>,
    backends: Vec<(String, Vec<Rule>)>,
    default_backend: Option<String>,
    /// `allow_multiple_cn`: accept certificates with several subject CNs.
    multiple_cn: bool,
    /// (key, rule) of every rule that matches nearly every client, for `check`.
    broad: Vec<(String, String)>,
}

impl Policy {
    /// Compiles groups and per-backend rules. `rules` holds (backend name, key for errors,
    /// rules). Errors are (key, why).
    pub fn compile(
        groups: &BTreeMap<String, Vec<String>>,
        rules: Vec<(String, String, Vec<RawRule>)>,
        default_backend: Option<String>,
    ) -> Result<Policy, (String, RuleError)> {
        let mut broad = Vec::new();
        let groups = compile::groups(groups, &mut broad)?;
        let mut backends = Vec::new();
        for (backend, key, raws) in rules {
            let rs = compile::backend_rules(&key, &raws, &groups, &mut broad)?;
            backends.push((backend, rs));
        }
        Ok(Policy {
            groups,
            backends,
            default_backend,
            multiple_cn: false,
            broad,
        })
    }

    /// Sets `allow_multiple_cn`: whether a certificate with several subject CNs may be
    /// authorized (its `cn=` rules then match any of them). Off by default.
    pub fn allow_multiple_cn(mut self, allow: bool) -> Policy {
        self.multiple_cn = allow;
        self
    }

    /// Rules that match nearly every verified client (`cn=*`, `sha256=*`, `ip=0.0.0.0/0`,
    /// tables of such parts), as (key, rule): `check` suggests `any` instead.
    pub fn broad_rules(&self) -> &[(String, String)] {
        &self.broad
    }

    /// Why `id` is refused whatever the rules say, if it is: a subject with several CNs is
    /// ambiguous (which one is the client?) unless `allow_multiple_cn` is set.
    pub fn identity_problem(&self, id: &Identity) -> Option<String> {
        if id.cn.len() > 1 && !self.multiple_cn {
            let cns: Vec<String> = id
                .cn
                .iter()
                .map(|c| format!("{:?}", crate::authz::identity::printable(c)))
                .collect();
            return Some(format!(
                "the client certificate has {} subject common names ({}): ambiguous identity \
                 refused; issue it with one CN, or set allow_multiple_cn = true",
                id.cn.len(),
                cns.join(", ")
            ));
        }
        None
    }

    fn rule_matches(&self, rule: &Rule, id: &Identity) -> bool {
        match rule {
            Rule::Any => true,
            Rule::Attr(m) => m.matches(id),
            Rule::Group(g) => self
                .groups
                .get(g)
                .is_some_and(|members| members.iter().any(|r| self.rule_matches(r, id))),
            Rule::All(parts) => parts.iter().all(|p| self.rule_matches(p, id)),
        }
    }

    /// The backend a connection with this SNI targets: the SNI itself (case-insensitive) or,
    /// without SNI, the default backend.
    pub fn target(&self, sni: Option<&str>) -> Option<String> {
        match sni {
            Some(s) => {
                let s = s.to_ascii_lowercase();
                self.backends
                    .iter()
                    .find(|(b, _)| *b == s)
                    .map(|(b, _)| b.clone())
            }
            // Only a default that names a backend (config validation ensures it; this keeps
            // `authorize` total for any `Policy` built through the public API).
            None => self
                .default_backend
                .clone()
                .filter(|d| self.backends.iter().any(|(b, _)| b == d)),
        }
    }

    /// Decides whether `id` may reach the backend selected by `sni`.
    pub fn authorize(&self, sni: Option<&str>, id: &Identity) -> Decision {
        let Some(backend) = self.target(sni) else {
            return Decision::UnknownBackend {
                sni: sni.map(str::to_string),
            };
        };
        if let Some(reason) = self.identity_problem(id) {
            return Decision::Refused { backend, reason };
        }
        let Some((_, rules)) = self.backends.iter().find(|(b, _)| *b == backend) else {
            return Decision::UnknownBackend {
                sni: sni.map(str::to_string),
            };
        };
        match rules.iter().find(|r| self.rule_matches(r, id)) {
            Some(r) => Decision::Allow {
                backend,
                rule: r.to_string(),
            },
            None => Decision::Deny { backend },
        }
    }

    /// Every backend `id` may reach, with the first rule that allows it.
    pub fn explain(&self, id: &Identity) -> Vec<(String, String)> {
        if self.identity_problem(id).is_some() {
            return Vec::new();
        }
        self.backends
            .iter()
            .filter_map(|(b, rules)| {
                rules
                    .iter()
                    .find(|r| self.rule_matches(r, id))
                    .map(|r| (b.clone(), r.to_string()))
            })
            .collect()
    }

    /// The default backend, if configured.
    pub fn default_backend(&self) -> Option<&str> {
        self.default_backend.as_deref()
    }
}

/// Glob match where `*` matches any run of characters (including none).
pub fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
mod broad_tests;
#[cfg(test)]
mod tests;
