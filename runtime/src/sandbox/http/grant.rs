//! What an `http` grant allows: scheme/host/port patterns, and the limits every attempt's
//! requests run under.
//!
//! A pattern is `scheme://host[:port]`: `http` or `https`; an exact host name, a `*.` subdomain
//! wildcard (`*.example.com` matches `a.example.com` and `a.b.example.com`, not
//! `example.com`), an IPv4 address or a bracketed IPv6 address; a port number, `*` for any, or
//! nothing for the scheme's default (80, 443).
//!
//! ```
//! use spool::HttpPattern;
//!
//! let pattern: HttpPattern = "https://*.example.com".parse().unwrap();
//! assert!(pattern.matches("https", "api.example.com", 443));
//! assert!(!pattern.matches("https", "api.example.com", 8443));
//! assert!(!pattern.matches("http", "api.example.com", 80));
//! ```

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// One allowed destination: a scheme, a host (or subdomain wildcard) and a port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HttpPattern {
    scheme: Scheme,
    host: Host,
    port: Port,
    text: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Scheme {
    Http,
    Https,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Host {
    /// An exact host name, lowercase.
    Name(String),
    /// `*.suffix`: any name ending in `.suffix` (the suffix lowercase, without the dot).
    Subdomains(String),
    /// An IP address, written literally.
    Ip(IpAddr),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Port {
    Exactly(u16),
    Any,
}

impl Scheme {
    fn parse(text: &str) -> Option<Scheme> {
        match text {
            "http" => Some(Scheme::Http),
            "https" => Some(Scheme::Https),
            _ => None,
        }
    }

    fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }
}

/// The port a request goes to when its authority names none.
pub(crate) fn default_port(scheme: &str) -> Option<u16> {
    Scheme::parse(scheme).map(Scheme::default_port)
}

impl FromStr for HttpPattern {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (scheme, rest) = text
            .split_once("://")
            .ok_or("expected `scheme://host[:port]`, e.g. `https://api.example.com`")?;
        let scheme = Scheme::parse(&scheme.to_ascii_lowercase())
            .ok_or_else(|| format!("the scheme must be `http` or `https`, not `{scheme}`"))?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#', '@']) {
            return Err("a grant names a scheme, a host and a port: no path, query or user".into());
        }
        let (host, port) = split_host_port(rest)?;
        let port = match port {
            None => Port::Exactly(scheme.default_port()),
            Some("*") => Port::Any,
            Some(p) => Port::Exactly(
                p.parse::<u16>()
                    .ok()
                    .filter(|&p| p != 0)
                    .ok_or_else(|| format!("bad port `{p}`: a number from 1 to 65535, or `*`"))?,
            ),
        };
        let host = parse_host(host)?;
        Ok(HttpPattern {
            scheme,
            host,
            port,
            text: text.to_owned(),
        })
    }
}

/// Splits `host[:port]`, `[v6][:port]`.
fn split_host_port(text: &str) -> Result<(&str, Option<&str>), String> {
    if let Some(v6) = text.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or("an IPv6 address needs its closing `]`")?;
        return match after {
            "" => Ok((host, None)),
            _ => after
                .strip_prefix(':')
                .map(|port| (host, Some(port)))
                .ok_or_else(|| format!("unexpected `{after}` after the IPv6 address")),
        };
    }
    Ok(match text.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (text, None),
    })
}

fn parse_host(text: &str) -> Result<Host, String> {
    if text.is_empty() {
        return Err("the host is empty".into());
    }
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(Host::Ip(ip));
    }
    let lower = text.to_ascii_lowercase();
    let (wildcard, name) = match lower.strip_prefix("*.") {
        Some(suffix) => (true, suffix),
        None => (false, lower.as_str()),
    };
    let valid_label = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    if name.is_empty() || !name.split('.').all(valid_label) {
        return Err(if text.contains('*') {
            format!(
                "bad host `{text}`: a wildcard is `*.` followed by a domain, e.g. `*.example.com`"
            )
        } else {
            format!("bad host `{text}`: not a host name or an IP address")
        });
    }
    Ok(if wildcard {
        Host::Subdomains(name.to_owned())
    } else {
        Host::Name(name.to_owned())
    })
}

impl HttpPattern {
    /// Whether a request to `scheme://host:port` is allowed by this pattern. `host` is the
    /// request's host as written (a name, or an IP address, IPv6 without brackets).
    pub fn matches(&self, scheme: &str, host: &str, port: u16) -> bool {
        if Scheme::parse(scheme) != Some(self.scheme) {
            return false;
        }
        if let Port::Exactly(p) = self.port
            && p != port
        {
            return false;
        }
        match &self.host {
            Host::Ip(ip) => host.parse::<IpAddr>().is_ok_and(|h| h == *ip),
            Host::Name(name) => host.eq_ignore_ascii_case(name),
            Host::Subdomains(suffix) => {
                let host = host.to_ascii_lowercase();
                host.strip_suffix(suffix.as_str())
                    .and_then(|head| head.strip_suffix('.'))
                    .is_some_and(|head| !head.is_empty())
            }
        }
    }

    /// Whether this pattern names `host` literally, so that connecting to a loopback or
    /// private address is allowed for it: an IP address, or `localhost` (for loopback only).
    pub(crate) fn literal_for(&self, ip: IpAddr) -> bool {
        match &self.host {
            Host::Ip(granted) => *granted == ip,
            Host::Name(name) => name == "localhost" && ip.is_loopback(),
            Host::Subdomains(_) => false,
        }
    }

    /// Whether this pattern grants `scheme` on `port`, whatever the host.
    pub(crate) fn scheme_and_port(&self, scheme: &str, port: u16) -> bool {
        Scheme::parse(scheme) == Some(self.scheme)
            && match self.port {
                Port::Exactly(p) => p == port,
                Port::Any => true,
            }
    }
}

impl fmt::Display for HttpPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for HttpPattern {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for HttpPattern {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse()
            .map_err(|e| serde::de::Error::custom(format!("bad http grant `{text}`: {e}")))
    }
}

/// Whether `ip` is an address a granted name must not lead to unless it is granted
/// literally: loopback, private, link-local (cloud metadata services live at 169.254.169.254),
/// unspecified, and the IPv6 equivalents (with IPv4-mapped addresses judged as IPv4).
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                // 100.64.0.0/10, carrier-grade NAT: not reachable from the internet either.
                || (v4.octets()[0] == 100 && (v4.octets()[1] & 0xc0) == 64)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_internal(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || (first & 0xfe00) == 0xfc00 // fc00::/7, unique local
                || (first & 0xffc0) == 0xfe80 // fe80::/10, link-local
        }
    }
}

/// The limits every attempt's HTTP requests run under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpLimits {
    /// Requests of one attempt in flight at once (sent and not yet fully answered); one more
    /// is refused with `connection-limit-reached`.
    pub max_concurrent: u32,
    /// The most request body bytes per request.
    pub max_request_bytes: u64,
    /// The most response body bytes per request.
    pub max_response_bytes: u64,
    /// How long connecting (TCP and TLS) may take.
    pub connect_timeout: Duration,
    /// How long the first byte of the response may take once the request is sent.
    pub first_byte_timeout: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_concurrent: 8,
            max_request_bytes: 10 << 20,
            max_response_bytes: 10 << 20,
            connect_timeout: Duration::from_secs(10),
            first_byte_timeout: Duration::from_secs(60),
        }
    }
}

/// An `http` grant: where a plugin's requests may go, under which limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpGrant {
    /// Who granted it, for refusals: `queue \`email\`'s grants`, or `--allow-http`.
    pub granted_by: String,
    /// The allowed destinations; a request matching none is refused.
    pub patterns: Vec<HttpPattern>,
    /// The limits per attempt.
    pub limits: HttpLimits,
}

impl HttpGrant {
    /// Why a request to `scheme://host:port` is refused, or `None` if a pattern allows it.
    pub(crate) fn refusal(&self, scheme: &str, host: &str, port: u16) -> Option<String> {
        if self.patterns.iter().any(|p| p.matches(scheme, host, port)) {
            return None;
        }
        Some(format!(
            "not granted by {} ({})",
            self.granted_by,
            self.listed()
        ))
    }

    /// Whether connecting to `ip` is allowed for a request to `scheme://host:port` already
    /// matched by a pattern: any public address; an internal one only if a pattern for the
    /// scheme and port names it (or `localhost`, for loopback) literally.
    pub(crate) fn address_allowed(&self, scheme: &str, port: u16, ip: IpAddr) -> bool {
        !is_internal(ip)
            || self
                .patterns
                .iter()
                .any(|p| p.scheme_and_port(scheme, port) && p.literal_for(ip))
    }

    /// The patterns as the config writes them: `http = ["https://api.example.com", ...]`.
    pub fn listed(&self) -> String {
        let list: Vec<String> = self.patterns.iter().map(|p| format!("\"{p}\"")).collect();
        format!("http = [{}]", list.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> HttpPattern {
        text.parse().unwrap()
    }

    #[test]
    fn patterns_match_scheme_host_and_port() {
        assert!(p("https://api.mailgun.net").matches("https", "api.mailgun.net", 443));
        assert!(p("https://API.mailgun.net/").matches("https", "api.MAILGUN.net", 443));
        assert!(!p("https://api.mailgun.net").matches("http", "api.mailgun.net", 443));
        assert!(!p("https://api.mailgun.net").matches("https", "api.mailgun.net", 444));
        assert!(!p("https://api.mailgun.net").matches("https", "evil.mailgun.net", 443));
        assert!(p("http://127.0.0.1:8025").matches("http", "127.0.0.1", 8025));
        assert!(!p("http://127.0.0.1:8025").matches("http", "127.0.0.1", 80));
        assert!(p("http://[::1]:*").matches("http", "::1", 9));
        assert!(p("https://*.example.com:443").matches("https", "a.b.example.com", 443));
        assert!(!p("https://*.example.com").matches("https", "example.com", 443));
        assert!(!p("https://*.example.com").matches("https", "badexample.com", 443));
        assert!(p("http://localhost:*").matches("http", "localhost", 1234));
    }

    #[test]
    fn bad_patterns_are_refused_with_the_reason() {
        for (text, reason) in [
            ("api.mailgun.net", "scheme://host"),
            ("ftp://x.org", "`http` or `https`"),
            ("https://x.org/path", "no path"),
            ("https://x.org:0", "bad port"),
            ("https://x.org:99999", "bad port"),
            ("https://*", "wildcard"),
            ("https://a.*.org", "wildcard"),
            ("https://", "empty"),
            ("https://bad_host", "not a host name"),
            ("https://[::1", "closing"),
        ] {
            let err = text.parse::<HttpPattern>().unwrap_err();
            assert!(err.contains(reason), "{text}: {err}");
        }
    }

    #[test]
    fn internal_addresses_are_recognised() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "::1",
            "::",
            "fc00::1",
            "fd12::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
        ] {
            assert!(is_internal(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["8.8.8.8", "172.32.0.1", "2001:4860::8888", "1.1.1.1"] {
            assert!(!is_internal(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn internal_addresses_need_a_literal_grant() {
        let grant = |patterns: &[&str]| HttpGrant {
            granted_by: "queue `q`'s grants".into(),
            patterns: patterns.iter().map(|t| p(t)).collect(),
            limits: HttpLimits::default(),
        };
        let loopback: IpAddr = "127.0.0.1".parse().unwrap();
        let by_name = grant(&["http://vm:8025"]);
        assert!(!by_name.address_allowed("http", 8025, loopback));
        assert!(by_name.address_allowed("http", 8025, "93.184.216.34".parse().unwrap()));
        let with_ip = grant(&["http://vm:8025", "http://127.0.0.1:8025"]);
        assert!(with_ip.address_allowed("http", 8025, loopback));
        assert!(!with_ip.address_allowed("http", 8026, loopback));
        let localhost = grant(&["http://localhost:8025"]);
        assert!(localhost.address_allowed("http", 8025, loopback));
        assert!(!localhost.address_allowed("http", 8025, "10.0.0.1".parse().unwrap()));
    }
}
