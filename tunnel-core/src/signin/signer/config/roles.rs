//! The `[[role]]` tables of signer.toml: what people may ask for, who may ask, who decides,
//! and for how long at most. Parsed by serde; [`validate`] checks what crosses fields and
//! keys (`file: role[N].key: problem; fix`).

use crate::config::values::HumanDuration;
use crate::config::ConfigError;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// Default longest grant when a role sets no `max_duration`.
pub(crate) const DEFAULT_MAX_DURATION: Duration = Duration::from_secs(3600);
/// Most distinct approvers a role may require.
pub(crate) const MAX_APPROVALS: u32 = 10;

/// A `[[role]]` table as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRole {
    name: String,
    #[serde(default)]
    grants: Vec<String>,
    #[serde(default)]
    requesters: Vec<String>,
    #[serde(default)]
    approvers: Vec<String>,
    approvals: Option<i64>,
    max_duration: Option<HumanDuration>,
    require_reason: Option<bool>,
}

/// A validated role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Role {
    /// What people ask for (`db-admin`).
    pub name: String,
    /// OUs the elevated certificate carries while the grant lasts.
    pub grants: Vec<String>,
    /// Groups (OUs) whose members may ask; empty: anyone signed in.
    pub requesters: Vec<String>,
    /// Groups (OUs) whose members may approve or deny.
    pub approvers: Vec<String>,
    /// Distinct approvers needed.
    pub approvals: u32,
    /// Longest grant.
    pub max_duration: Duration,
    /// Whether a request must give a reason.
    pub require_reason: bool,
}

impl Role {
    /// Whether a person holding `ous` may ask for this role.
    pub(crate) fn may_request(&self, ous: &[String]) -> bool {
        self.requesters.is_empty() || self.requesters.iter().any(|g| ous.contains(g))
    }

    /// Whether a person holding `ous` may decide requests for this role.
    pub(crate) fn may_approve(&self, ous: &[String]) -> bool {
        self.approvers.iter().any(|g| ous.contains(g))
    }
}

/// Checks the roles; `group_map` gives the OUs sign-in can write (a group named in a role
/// that no mapping produces is warned about: nobody would ever hold it), `max_lifetime`
/// bounds `max_duration` (a grant never outlives the sign-in it elevates). Returns the
/// roles and the warnings.
pub(crate) fn validate(
    f: &Path,
    raw: Vec<RawRole>,
    group_map: &BTreeMap<String, String>,
    max_lifetime: Duration,
) -> Result<(Vec<Role>, Vec<String>), ConfigError> {
    let mut roles: Vec<Role> = Vec::new();
    let mut warnings = Vec::new();
    for (i, r) in raw.into_iter().enumerate() {
        let role = one_role(f, i, r, max_lifetime)?;
        if roles.iter().any(|o| o.name == role.name) {
            return Err(ConfigError::new(
                f,
                format!("role[{i}].name"),
                format!(
                    "role {:?} is defined twice; give each [[role]] its own name",
                    role.name
                ),
            ));
        }
        warnings.extend(unknown_groups(f, i, &role, group_map));
        roles.push(role);
    }
    no_grant_of_approval(f, &roles)?;
    Ok((roles, warnings))
}

/// One `[[role]]` (the `i`-th), checked on its own.
fn one_role(f: &Path, i: usize, r: RawRole, max_lifetime: Duration) -> Result<Role, ConfigError> {
    let key = |k: &str| format!("role[{i}].{k}");
    let name = r.name.trim().to_string();
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return Err(ConfigError::new(
            f,
            key("name"),
            format!("{name:?} is not a role name; use letters, digits, '-', '_' or '.'"),
        ));
    }
    if r.grants.is_empty() || r.grants.iter().any(|g| g.trim().is_empty()) {
        return Err(ConfigError::new(
            f,
            key("grants"),
            "must list the OUs the role adds, e.g. grants = [\"dba\"]",
        ));
    }
    if r.approvers.is_empty() {
        return Err(ConfigError::new(
            f,
            key("approvers"),
            "must list the groups whose members may approve, e.g. approvers = [\"leads\"]",
        ));
    }
    let approvals = r.approvals.unwrap_or(1);
    if !(1..=i64::from(MAX_APPROVALS)).contains(&approvals) {
        return Err(ConfigError::new(
            f,
            key("approvals"),
            format!("{approvals} is out of range 1..={MAX_APPROVALS}; a request needs at least one approver"),
        ));
    }
    let max_duration = r.max_duration.map_or(DEFAULT_MAX_DURATION, |d| d.0);
    if max_duration > max_lifetime {
        return Err(ConfigError::new(
            f,
            key("max_duration"),
            format!(
                "is longer than max_lifetime ({}): a grant never outlives the sign-in it elevates; shorten it",
                humantime::format_duration(max_lifetime)
            ),
        ));
    }
    Ok(Role {
        name,
        grants: r.grants,
        requesters: r.requesters,
        approvers: r.approvers,
        approvals: approvals as u32,
        max_duration,
        require_reason: r.require_reason.unwrap_or(true),
    })
}

/// Warnings for groups of `role` that no `[group_map]` value produces.
fn unknown_groups(
    f: &Path,
    i: usize,
    role: &Role,
    group_map: &BTreeMap<String, String>,
) -> Vec<String> {
    let known = |g: &String| group_map.values().any(|v| v == g);
    let mut warnings = Vec::new();
    for (k, list) in [
        ("grants", &role.grants),
        ("requesters", &role.requesters),
        ("approvers", &role.approvers),
    ] {
        for g in list.iter().filter(|g| !known(g)) {
            warnings.push(format!(
                "{}: role[{i}].{k}: group {g:?} is no value of [group_map]; nobody signs in with it",
                f.display()
            ));
        }
    }
    warnings
}

/// Approver groups are read from the caller's current certificate, elevated ones included:
/// a role that grants an approver group would let whoever holds it approve requests (their
/// own role's included, through a second person). Refused.
fn no_grant_of_approval(f: &Path, roles: &[Role]) -> Result<(), ConfigError> {
    for (i, r) in roles.iter().enumerate() {
        for g in &r.grants {
            if let Some(other) = roles.iter().find(|o| o.approvers.contains(g)) {
                return Err(ConfigError::new(
                    f,
                    format!("role[{i}].grants"),
                    format!(
                        "grants {g:?}, an approver group of role {:?}: holding the grant would make one an approver; grant another OU",
                        other.name
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// `notify_url`: an https:// webhook (plain http only on loopback, for tests).
pub(crate) fn notify_url(f: &Path, raw: Option<String>) -> Result<Option<String>, ConfigError> {
    let Some(url) = raw.map(|u| u.trim().to_string()) else {
        return Ok(None);
    };
    match crate::http::Url::parse(&url) {
        Ok(u) if u.tls || u.is_loopback() => Ok(Some(url)),
        Ok(_) => Err(ConfigError::new(
            f,
            "notify_url",
            "must be an https:// URL (the webhook of Slack, Mattermost or a relay)",
        )),
        Err(e) => Err(ConfigError::new(f, "notify_url", e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(toml: &str) -> Result<(Vec<Role>, Vec<String>), String> {
        #[derive(Deserialize)]
        struct File {
            role: Vec<RawRole>,
        }
        let raw: File = crate::config::load_raw_str(Path::new("signer.toml"), toml, "NONE", None)
            .map_err(|e| e.to_string())?;
        let map: BTreeMap<String, String> = [("dev", "dev"), ("dba", "dba"), ("leads", "leads")]
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        validate(
            Path::new("signer.toml"),
            raw.role,
            &map,
            Duration::from_secs(12 * 3600),
        )
        .map_err(|e| e.to_string())
    }

    const GOOD: &str = "name = \"db-admin\"\ngrants = [\"dba\"]\nrequesters = [\"dev\"]\napprovers = [\"leads\"]\n";

    #[test]
    fn a_complete_role_reads_with_defaults() {
        let (roles, warnings) = check(&format!("[[role]]\n{GOOD}")).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(
            roles,
            vec![Role {
                name: "db-admin".into(),
                grants: vec!["dba".into()],
                requesters: vec!["dev".into()],
                approvers: vec!["leads".into()],
                approvals: 1,
                max_duration: Duration::from_secs(3600),
                require_reason: true,
            }]
        );
        assert!(roles[0].may_request(&["dev".into()]));
        assert!(!roles[0].may_request(&["ops".into()]));
        assert!(roles[0].may_approve(&["leads".into(), "dev".into()]));
        assert!(!roles[0].may_approve(&["dev".into()]));
    }

    #[test]
    fn each_problem_names_the_key_and_the_fix() {
        let cases = [
            (
                "approvals = 0\n",
                "role[0].approvals: 0 is out of range 1..=10",
            ),
            ("approvals = 11\n", "role[0].approvals: 11 is out of range"),
            (
                "max_duration = \"13h\"\n",
                "role[0].max_duration: is longer than max_lifetime",
            ),
            ("max_duration = \"0s\"\n", "must be greater than zero"),
            ("max_duration = \"soon\"\n", "\"soon\" is not a duration"),
            ("colour = 1\n", "unknown field"),
        ];
        for (extra, want) in cases {
            let e = check(&format!("[[role]]\n{GOOD}{extra}")).unwrap_err();
            assert!(e.contains(want), "{want}: {e}");
        }
        let e = check("[[role]]\nname = \"x\"\napprovers = [\"leads\"]\n").unwrap_err();
        assert!(e.contains("signer.toml: role[0].grants: must list"), "{e}");
        let e = check("[[role]]\nname = \"x\"\ngrants = [\"dba\"]\n").unwrap_err();
        assert!(e.contains("role[0].approvers: must list"), "{e}");
        let e = check("[[role]]\nname = \"a b\"\ngrants = [\"dba\"]\napprovers = [\"leads\"]\n")
            .unwrap_err();
        assert!(
            e.contains("role[0].name: \"a b\" is not a role name"),
            "{e}"
        );
        let e = check(&format!("[[role]]\n{GOOD}[[role]]\n{GOOD}")).unwrap_err();
        assert!(
            e.contains("role[1].name: role \"db-admin\" is defined twice"),
            "{e}"
        );
    }

    /// Approver groups come from the caller's current certificate, grants included: a role
    /// that grants an approver group would make its holders approvers.
    #[test]
    fn a_role_may_not_grant_an_approver_group() {
        let escalating =
            "[[role]]\nname = \"lead-for-a-day\"\ngrants = [\"leads\"]\napprovers = [\"leads\"]\n";
        let e = check(&format!("[[role]]\n{GOOD}{escalating}")).unwrap_err();
        assert!(
            e.contains("role[1].grants: grants \"leads\", an approver group of role \"db-admin\""),
            "{e}"
        );
        // Positive control: granting another OU is fine.
        let fine = escalating.replace("grants = [\"leads\"]", "grants = [\"dev\"]");
        let (roles, _) = check(&format!("[[role]]\n{GOOD}{fine}")).unwrap();
        assert_eq!(roles.len(), 2);
    }

    #[test]
    fn unknown_groups_are_warned_not_refused() {
        let toml = "[[role]]\nname = \"x\"\ngrants = [\"dbx\"]\napprovers = [\"leads\"]\n";
        let (roles, warnings) = check(toml).unwrap();
        assert_eq!(roles.len(), 1);
        assert_eq!(
            warnings,
            vec!["signer.toml: role[0].grants: group \"dbx\" is no value of [group_map]; nobody signs in with it"]
        );
    }
}
