//! Configuration values that serde parses by itself, each with the error message operators
//! see (`file: key: message` — serde's path gives the key): durations, bounded counts,
//! addresses, log settings and every enumeration.

use crate::revocation::ocsp::OcspMode;
use serde::de::{Deserialize, Deserializer, Error};
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

/// A human duration (`10s`, `500ms`, `1h 30m`), greater than zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let v = humantime::parse_duration(text.trim()).map_err(|e| {
            D::Error::custom(format!(
                "{text:?} is not a duration ({e}); write e.g. \"10s\", \"500ms\", \"1h\""
            ))
        })?;
        if v.is_zero() {
            return Err(D::Error::custom("must be greater than zero"));
        }
        Ok(HumanDuration(v))
    }
}

/// A human duration that may be zero (`0` turns the behaviour off), e.g. `drain_delay`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DurationOrZero(pub Duration);

impl<'de> Deserialize<'de> for DurationOrZero {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        if text.trim() == "0" {
            return Ok(DurationOrZero(Duration::ZERO));
        }
        humantime::parse_duration(text.trim())
            .map(DurationOrZero)
            .map_err(|e| {
                D::Error::custom(format!(
                    "{text:?} is not a duration ({e}); write e.g. \"10s\", \"500ms\", or \"0\" for none"
                ))
            })
    }
}

/// The value of an optional duration key, or `default`.
pub(crate) fn duration_or(v: Option<HumanDuration>, default: Duration) -> Duration {
    v.map_or(default, |d| d.0)
}

/// A whole number in `MIN..=MAX` (connection caps, chain depth).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounded<const MIN: i64, const MAX: i64>(pub i64);

impl<'de, const MIN: i64, const MAX: i64> Deserialize<'de> for Bounded<MIN, MAX> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = i64::deserialize(d)?;
        if !(MIN..=MAX).contains(&n) {
            return Err(D::Error::custom(format!(
                "{n} is out of range {MIN}..={MAX}"
            )));
        }
        Ok(Bounded(n))
    }
}

/// A connection cap (`max_connections`, `max_handshakes`).
pub(super) type ConnCount = Bounded<1, 1_000_000>;

/// The value of an optional count key, or `default`.
pub(crate) fn count_or<const MIN: i64, const MAX: i64>(
    v: Option<Bounded<MIN, MAX>>,
    default: usize,
) -> usize {
    v.map_or(default, |n| n.0 as usize)
}

/// An `IP:port` address of a local listener, such as the metrics endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricsAddr(pub SocketAddr);

impl<'de> Deserialize<'de> for MetricsAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let m = String::deserialize(d)?;
        m.trim().parse().map(MetricsAddr).map_err(|_| {
            D::Error::custom(format!(
                "{m:?} is not an IP:port address, e.g. \"127.0.0.1:9750\""
            ))
        })
    }
}

/// A `log_level` filter such as `"info"` or `"warn,audit=info"`: each directive must end in a
/// level (EnvFilter would silently ignore a typo).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLevel(pub String);

impl<'de> Deserialize<'de> for LogLevel {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use tracing_subscriber::filter::{Directive, LevelFilter};
        let l = String::deserialize(d)?;
        for part in l.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let lvl = part.rsplit_once('=').map(|(_, v)| v).unwrap_or(part);
            if lvl.parse::<LevelFilter>().is_err() || part.parse::<Directive>().is_err() {
                return Err(D::Error::custom(format!(
                    "{l:?} is not a log filter ({part:?}); use levels off, error, warn, info, debug, trace, e.g. \"info\" or \"warn,audit=info\""
                )));
            }
        }
        Ok(LogLevel(l))
    }
}

/// Deserializes a string naming one of a fixed set of choices; `fix` says what is accepted.
fn choice<'de, D, T>(
    d: D,
    parse: fn(&str) -> Option<T>,
    fix: fn(&str) -> String,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
{
    let s = String::deserialize(d)?;
    parse(&s).ok_or_else(|| D::Error::custom(fix(&s)))
}

/// Minimum TLS protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsVersion {
    /// TLS 1.2 and 1.3.
    Tls12,
    /// TLS 1.3 only (the default).
    #[default]
    Tls13,
}

impl fmt::Display for TlsVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TlsVersion::Tls12 => "1.2",
            TlsVersion::Tls13 => "1.3",
        })
    }
}

impl<'de> Deserialize<'de> for TlsVersion {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        choice(
            d,
            |s| match s.trim() {
                "1.3" => Some(TlsVersion::Tls13),
                "1.2" => Some(TlsVersion::Tls12),
                _ => None,
            },
            |o| {
                format!(
                    "{:?} is not supported; use \"1.3\" (default) or \"1.2\"",
                    o.trim()
                )
            },
        )
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl<'de> Deserialize<'de> for LogFormat {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        choice(
            d,
            |s| match s {
                "text" => Some(LogFormat::Text),
                "json" => Some(LogFormat::Json),
                _ => None,
            },
            |o| format!("{o:?} is not a log format; use \"text\" or \"json\""),
        )
    }
}

/// What the gateway does when a CRL is past its `nextUpdate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CrlExpired {
    /// Refuse clients of that CA (fail closed; the default).
    #[default]
    Deny,
    /// Log loudly and keep using the stale list.
    Warn,
}

impl<'de> Deserialize<'de> for CrlExpired {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        choice(
            d,
            |s| match s {
                "deny" => Some(CrlExpired::Deny),
                "warn" => Some(CrlExpired::Warn),
                _ => None,
            },
            |o| format!("{o:?} is not a choice; use \"deny\" (default) or \"warn\""),
        )
    }
}

/// Which certificates of a client chain need a CRL of their issuer when `crl` is set
/// (`crl_check`); a certificate that needs one and has none is refused (`crl_missing`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CrlCoverage {
    /// Every certificate of the chain but the trust anchor (the default; OpenSSL's
    /// CRL_CHECK_ALL).
    #[default]
    Chain,
    /// Only the client certificate; CA certificates are checked where their issuer's CRL
    /// is configured.
    Leaf,
    /// None: the CRLs configured are applied where they exist (revocation at one level only).
    Available,
}

impl<'de> Deserialize<'de> for CrlCoverage {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        choice(
            d,
            |s| match s {
                "chain" => Some(CrlCoverage::Chain),
                "leaf" => Some(CrlCoverage::Leaf),
                "available" => Some(CrlCoverage::Available),
                _ => None,
            },
            |o| {
                format!("{o:?} is not a choice; use \"chain\" (default), \"leaf\" or \"available\"")
            },
        )
    }
}

impl<'de> Deserialize<'de> for OcspMode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        choice(
            d,
            |s| match s {
                "off" => Some(OcspMode::Off),
                "prefer" => Some(OcspMode::Prefer),
                "require" => Some(OcspMode::Require),
                _ => None,
            },
            |o| format!("{o:?} is not a choice; use \"off\" (default), \"prefer\" or \"require\""),
        )
    }
}

/// `host:port` or `[v6]:port` with a numeric port.
pub(crate) fn valid_host_port(a: &str) -> bool {
    if a.parse::<SocketAddr>().is_ok() {
        return true;
    }
    match a.rsplit_once(':') {
        Some((host, port)) => {
            !host.is_empty()
                && !host.contains(':')
                && port.parse::<u16>().map(|p| p != 0).unwrap_or(false)
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::de::value::{Error as ValueError, StrDeserializer};
    use serde::de::IntoDeserializer;

    fn parse<T: for<'de> Deserialize<'de>>(s: &str) -> Result<T, String> {
        let d: StrDeserializer<'_, ValueError> = s.into_deserializer();
        T::deserialize(d).map_err(|e| e.to_string())
    }

    #[test]
    fn choices_parse_and_name_the_fix() {
        assert_eq!(parse::<LogFormat>("json"), Ok(LogFormat::Json));
        assert_eq!(parse::<TlsVersion>(" 1.2 "), Ok(TlsVersion::Tls12));
        assert_eq!(parse::<CrlExpired>("warn"), Ok(CrlExpired::Warn));
        assert_eq!(parse::<OcspMode>("require"), Ok(OcspMode::Require));
        assert_eq!(parse::<CrlCoverage>("leaf"), Ok(CrlCoverage::Leaf));
        let cases = [
            (
                parse::<LogFormat>("xml").unwrap_err(),
                "\"xml\" is not a log format; use \"text\" or \"json\"",
            ),
            (
                parse::<TlsVersion>("1.0").unwrap_err(),
                "\"1.0\" is not supported; use \"1.3\" (default) or \"1.2\"",
            ),
            (
                parse::<CrlExpired>("maybe").unwrap_err(),
                "\"maybe\" is not a choice; use \"deny\" (default) or \"warn\"",
            ),
            (
                parse::<OcspMode>("on").unwrap_err(),
                "\"on\" is not a choice; use \"off\" (default), \"prefer\" or \"require\"",
            ),
        ];
        for (got, want) in cases {
            assert_eq!(got, want);
        }
    }

    #[test]
    fn durations_are_human_and_positive() {
        assert_eq!(
            parse::<HumanDuration>("1h 30m"),
            Ok(HumanDuration(Duration::from_secs(5400)))
        );
        assert_eq!(
            parse::<HumanDuration>("500ms"),
            Ok(HumanDuration(Duration::from_millis(500)))
        );
        assert!(parse::<HumanDuration>("soon")
            .unwrap_err()
            .contains("\"soon\" is not a duration"));
        assert_eq!(
            parse::<HumanDuration>("0s").unwrap_err(),
            "must be greater than zero"
        );
    }

    #[test]
    fn log_levels_must_end_in_a_level() {
        assert!(parse::<LogLevel>("warn,audit=info").is_ok());
        assert!(parse::<LogLevel>("audit=loud")
            .unwrap_err()
            .contains("is not a log filter"));
    }
}
