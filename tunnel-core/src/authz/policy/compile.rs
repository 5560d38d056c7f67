//! Compiling the rules as written (`[groups]` and every backend's `allow`) into [`Rule`]s,
//! noting the rules that match nearly every client.

use super::{Attr, Matcher, RawRule, Rule, RuleError};
use std::collections::{BTreeMap, HashMap};

/// (key, rule) of rules that match nearly every client, in file order.
type Broad = Vec<(String, String)>;

/// `[groups]`: each group non-empty, its members rules without `group=`.
pub(super) fn groups(
    groups: &BTreeMap<String, Vec<String>>,
    broad: &mut Broad,
) -> Result<HashMap<String, Vec<Rule>>, (String, RuleError)> {
    let mut compiled = HashMap::new();
    for (name, members) in groups {
        if members.is_empty() {
            return Err((format!("groups.{name}"), RuleError::EmptyGroup));
        }
        let mut rs = Vec::new();
        for (i, m) in members.iter().enumerate() {
            let key = format!("groups.{name}[{i}]");
            let r = parse_text_rule(m, true).map_err(|e| (key.clone(), e))?;
            if r.matches_everything() {
                broad.push((key, r.to_string()));
            }
            rs.push(r);
        }
        compiled.insert(name.clone(), rs);
    }
    Ok(compiled)
}

/// One backend's `allow` (under `key`): each rule parsed, every group it names defined.
pub(super) fn backend_rules(
    key: &str,
    raws: &[RawRule],
    groups: &HashMap<String, Vec<Rule>>,
    broad: &mut Broad,
) -> Result<Vec<Rule>, (String, RuleError)> {
    let mut rs = Vec::new();
    for (i, raw) in raws.iter().enumerate() {
        let r = parse_rule(raw, false).map_err(|e| (format!("{key}[{i}]"), e))?;
        check_groups_defined(&r, groups).map_err(|e| (format!("{key}[{i}]"), e))?;
        if r.matches_everything() {
            broad.push((format!("{key}[{i}]"), r.to_string()));
        }
        rs.push(r);
    }
    Ok(rs)
}

/// Every `group=` in `r` (alone or in a table) names a group of `[groups]`.
fn check_groups_defined(r: &Rule, groups: &HashMap<String, Vec<Rule>>) -> Result<(), RuleError> {
    let check = |g: &str| {
        if groups.contains_key(g) {
            Ok(())
        } else {
            Err(RuleError::UndefinedGroup(g.to_string()))
        }
    };
    match r {
        Rule::Group(g) => check(g),
        Rule::All(parts) => {
            for p in parts {
                if let Rule::Group(g) = p {
                    check(g)?;
                }
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Parses one textual rule. `in_group` forbids `group=` (groups do not nest).
pub(super) fn parse_text_rule(s: &str, in_group: bool) -> Result<Rule, RuleError> {
    let s = s.trim();
    if s == "any" {
        return Ok(Rule::Any);
    }
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| RuleError::NotARule(s.to_string()))?;
    let k = k.trim().to_ascii_lowercase();
    parse_pair(&k, v, in_group)
}

fn parse_pair(k: &str, v: &str, in_group: bool) -> Result<Rule, RuleError> {
    if k == "group" {
        if in_group {
            return Err(RuleError::NestedGroup);
        }
        let v = v.trim();
        if v.is_empty() {
            return Err(RuleError::NoGroupName);
        }
        return Ok(Rule::Group(v.to_string()));
    }
    let attr = Attr::parse(k).ok_or_else(|| RuleError::UnknownAttribute(k.to_string()))?;
    Ok(Rule::Attr(Matcher::new(attr, v)?))
}

pub(super) fn parse_rule(raw: &RawRule, in_group: bool) -> Result<Rule, RuleError> {
    match raw {
        RawRule::Text(s) => parse_text_rule(s, in_group),
        RawRule::Table(t) => {
            if t.is_empty() {
                return Err(RuleError::EmptyTable);
            }
            let mut parts = Vec::new();
            for (k, v) in t {
                parts.push(parse_pair(&k.trim().to_ascii_lowercase(), v, in_group)?);
            }
            Ok(Rule::All(parts))
        }
    }
}
