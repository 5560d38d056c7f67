//! Which listeners a reload binds and which it stops: a pure function of the listeners open
//! now and the ones the new configuration wants.
//!
//! The rule for port 0 (one rule for the gateway and the client agent): an address with port
//! 0 asks for "any free port on this IP". It is satisfied by an open listener on the same IP
//! that no exact address claims (preferring one with the same route), so the port the
//! operator was given at start-up stays; only when no such listener is open is a new one
//! bound, on a fresh port.

use std::net::SocketAddr;

/// What a reload changes in the listeners.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plan<R> {
    /// Addresses to bind (before the new configuration is committed), with their routes.
    pub to_bind: Vec<(SocketAddr, R)>,
    /// Open listeners to close.
    pub to_stop: Vec<SocketAddr>,
    /// Open listeners kept, whose route changes.
    pub to_reroute: Vec<(SocketAddr, R)>,
}

impl<R> Default for Plan<R> {
    fn default() -> Self {
        Plan {
            to_bind: Vec::new(),
            to_stop: Vec::new(),
            to_reroute: Vec::new(),
        }
    }
}

/// Plans the move from the `current` listeners (address actually bound, route) to the
/// `wanted` ones (address as configured, route). Each current listener serves at most one
/// wanted entry.
pub(crate) fn reconcile<R: Clone + PartialEq>(
    current: &[(SocketAddr, R)],
    wanted: &[(SocketAddr, R)],
) -> Plan<R> {
    // For each current listener, the wanted entry it serves (index into `wanted`).
    let mut serves: Vec<Option<usize>> = vec![None; current.len()];
    let mut satisfied = vec![false; wanted.len()];
    // Exact addresses first, so that port-0 entries cannot take a listener someone names.
    for (w, (addr, _)) in wanted.iter().enumerate() {
        if addr.port() == 0 {
            continue;
        }
        if let Some(c) = (0..current.len()).find(|&c| serves[c].is_none() && current[c].0 == *addr)
        {
            serves[c] = Some(w);
            satisfied[w] = true;
        }
    }
    // Then port 0: a free listener on the same IP, one with the same route if there is one.
    for same_route in [true, false] {
        for (w, (addr, route)) in wanted.iter().enumerate() {
            if addr.port() != 0 || satisfied[w] {
                continue;
            }
            let fits = |c: usize| {
                serves[c].is_none()
                    && current[c].0.ip() == addr.ip()
                    && (!same_route || current[c].1 == *route)
            };
            if let Some(c) = (0..current.len()).find(|&c| fits(c)) {
                serves[c] = Some(w);
                satisfied[w] = true;
            }
        }
    }
    let mut plan = Plan {
        to_bind: Vec::new(),
        to_stop: Vec::new(),
        to_reroute: Vec::new(),
    };
    for (c, (addr, route)) in current.iter().enumerate() {
        match serves[c] {
            None => plan.to_stop.push(*addr),
            Some(w) if wanted[w].1 != *route => plan.to_reroute.push((*addr, wanted[w].1.clone())),
            Some(_) => {}
        }
    }
    for (w, entry) in wanted.iter().enumerate() {
        if !satisfied[w] {
            plan.to_bind.push(entry.clone());
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn l(list: &[(&str, &'static str)]) -> Vec<(SocketAddr, &'static str)> {
        list.iter().map(|(s, r)| (a(s), *r)).collect()
    }

    #[test]
    fn table() {
        type Case = (
            &'static str,
            &'static [(&'static str, &'static str)], // current
            &'static [(&'static str, &'static str)], // wanted
            &'static [(&'static str, &'static str)], // to_bind
            &'static [&'static str],                 // to_stop
            &'static [(&'static str, &'static str)], // to_reroute
        );
        let cases: &[Case] = &[
            (
                "nothing changes",
                &[("127.0.0.1:1000", "db")],
                &[("127.0.0.1:1000", "db")],
                &[],
                &[],
                &[],
            ),
            (
                "new address is bound",
                &[("127.0.0.1:1000", "")],
                &[("127.0.0.1:1000", ""), ("127.0.0.1:1001", "")],
                &[("127.0.0.1:1001", "")],
                &[],
                &[],
            ),
            (
                "removed address is stopped",
                &[("127.0.0.1:1000", ""), ("127.0.0.1:1001", "")],
                &[("127.0.0.1:1001", "")],
                &[],
                &["127.0.0.1:1000"],
                &[],
            ),
            (
                "moved address: bind new, stop old",
                &[("127.0.0.1:1000", "")],
                &[("127.0.0.1:2000", "")],
                &[("127.0.0.1:2000", "")],
                &["127.0.0.1:1000"],
                &[],
            ),
            (
                "same address, other backend: rerouted",
                &[("127.0.0.1:1000", "db")],
                &[("127.0.0.1:1000", "web")],
                &[],
                &[],
                &[("127.0.0.1:1000", "web")],
            ),
            (
                "port 0 keeps the port given at start",
                &[("127.0.0.1:4711", "")],
                &[("127.0.0.1:0", "")],
                &[],
                &[],
                &[],
            ),
            (
                "port 0 on another IP binds anew",
                &[("127.0.0.1:4711", "")],
                &[("127.0.0.2:0", "")],
                &[("127.0.0.2:0", "")],
                &["127.0.0.1:4711"],
                &[],
            ),
            (
                "port 0 with no listener binds",
                &[],
                &[("127.0.0.1:0", "db")],
                &[("127.0.0.1:0", "db")],
                &[],
                &[],
            ),
            (
                "one port-0 entry keeps one listener",
                &[("127.0.0.1:4711", ""), ("127.0.0.1:4712", "")],
                &[("127.0.0.1:0", "")],
                &[],
                &["127.0.0.1:4712"],
                &[],
            ),
            (
                "two port-0 tunnels keep their own backends",
                &[("127.0.0.1:4711", "db"), ("127.0.0.1:4712", "web")],
                &[("127.0.0.1:0", "web"), ("127.0.0.1:0", "db")],
                &[],
                &[],
                &[],
            ),
            (
                "port 0 takes a listener with another route when none matches",
                &[("127.0.0.1:4711", "db")],
                &[("127.0.0.1:0", "web")],
                &[],
                &[],
                &[("127.0.0.1:4711", "web")],
            ),
            (
                "an exact address wins over port 0",
                &[("127.0.0.1:4711", "db")],
                &[("127.0.0.1:0", "db"), ("127.0.0.1:4711", "web")],
                &[("127.0.0.1:0", "db")],
                &[],
                &[("127.0.0.1:4711", "web")],
            ),
            (
                "everything removed",
                &[("127.0.0.1:4711", "db"), ("[::1]:80", "web")],
                &[],
                &[],
                &["127.0.0.1:4711", "[::1]:80"],
                &[],
            ),
        ];
        for (name, current, wanted, bind, stop, reroute) in cases {
            let plan = reconcile(&l(current), &l(wanted));
            assert_eq!(plan.to_bind, l(bind), "{name}: to_bind");
            let stop: Vec<SocketAddr> = stop.iter().map(|s| a(s)).collect();
            assert_eq!(plan.to_stop, stop, "{name}: to_stop");
            assert_eq!(plan.to_reroute, l(reroute), "{name}: to_reroute");
        }
    }
}
