//! Choosing the interface to listen on, with NCCL's `NCCL_SOCKET_IFNAME` syntax.
//!
//! `OXCCL_SOCKET_IFNAME` is a comma-separated list of name prefixes (`eth,ib`); a leading `^`
//! turns it into an exclusion list (`^lo,docker`); a leading `=` makes the names exact
//! (`=eth0`, `^=docker0`). Unset, the first interface that is up and is neither loopback nor
//! `docker*` is used, and loopback when there is no other.

use std::net::IpAddr;

use crate::error::{Error, Result};

/// A parsed interface filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IfFilter {
    exclude: bool,
    exact: bool,
    names: Vec<String>,
}

impl IfFilter {
    /// Parses NCCL's syntax.
    pub fn parse(spec: &str) -> Result<Self> {
        let mut s = spec.trim();
        let exclude = s.starts_with('^');
        if exclude {
            s = &s[1..];
        }
        let exact = s.starts_with('=');
        if exact {
            s = &s[1..];
        }
        let names: Vec<String> = s
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(String::from)
            .collect();
        if names.is_empty() {
            return Err(Error::Config {
                var: "OXCCL_SOCKET_IFNAME",
                value: spec.to_string(),
                reason: "no interface names".into(),
            });
        }
        Ok(IfFilter {
            exclude,
            exact,
            names,
        })
    }

    /// Whether interface `name` passes.
    pub fn matches(&self, name: &str) -> bool {
        let hit = self.names.iter().any(|n| {
            if self.exact {
                name == n
            } else {
                name.starts_with(n.as_str())
            }
        });
        hit != self.exclude
    }
}

/// An interface address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    /// Interface name (`eth0`).
    pub name: String,
    /// One of its addresses.
    pub addr: IpAddr,
    /// Whether it is a loopback interface.
    pub loopback: bool,
}

/// The interfaces that are up, with their IPv4 and IPv6 addresses (IPv6 link-local left out:
/// it needs a scope id to be reachable).
pub fn list() -> Result<Vec<Interface>> {
    let mut out = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs writes a list head we own until freeifaddrs.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(Error::io(
            "tcp",
            "listing network interfaces",
            std::io::Error::last_os_error(),
        ));
    }
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: cur is a node of the list getifaddrs returned, alive until freeifaddrs.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_addr.is_null() || ifa.ifa_flags & libc::IFF_UP as u32 == 0 {
            continue;
        }
        // SAFETY: ifa_name is a NUL-terminated string owned by the list.
        let name = unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) }
            .to_string_lossy()
            .into_owned();
        let loopback = ifa.ifa_flags & libc::IFF_LOOPBACK as u32 != 0;
        // SAFETY: ifa_addr is non-null; its family says which sockaddr it is.
        let family = unsafe { (*ifa.ifa_addr).sa_family } as i32;
        let addr = match family {
            libc::AF_INET => {
                // SAFETY: AF_INET addresses are sockaddr_in.
                let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                IpAddr::from(u32::from_be(sin.sin_addr.s_addr).to_be_bytes())
            }
            libc::AF_INET6 => {
                // SAFETY: AF_INET6 addresses are sockaddr_in6.
                let sin6 = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in6) };
                let a = std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr);
                if a.segments()[0] & 0xffc0 == 0xfe80 {
                    continue;
                }
                IpAddr::V6(a)
            }
            _ => continue,
        };
        out.push(Interface {
            name,
            addr,
            loopback,
        });
    }
    // SAFETY: head came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}

/// Picks the address to listen on from `OXCCL_SOCKET_IFNAME`-style `spec` (or the default
/// rule when `None`), preferring IPv4.
pub fn choose(spec: Option<&str>) -> Result<Interface> {
    let all = list()?;
    let pick = |ok: &dyn Fn(&Interface) -> bool| {
        all.iter()
            .filter(|i| ok(i))
            .min_by_key(|i| i.addr.is_ipv6())
            .cloned()
    };
    let found = match spec {
        Some(s) => {
            let f = IfFilter::parse(s)?;
            pick(&|i| f.matches(&i.name))
        }
        None => pick(&|i| !i.loopback && !i.name.starts_with("docker"))
            .or_else(|| pick(&|i| i.loopback)),
    };
    found.ok_or_else(|| Error::Config {
        var: "OXCCL_SOCKET_IFNAME",
        value: spec.unwrap_or("").to_string(),
        reason: format!(
            "no interface that is up matches (have: {})",
            all.iter()
                .map(|i| i.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nccl_filter_syntax() {
        let f = IfFilter::parse("^lo,docker").unwrap();
        assert!(f.matches("eth0") && !f.matches("lo") && !f.matches("docker0"));
        let f = IfFilter::parse("eth").unwrap();
        assert!(f.matches("eth0") && f.matches("eth1") && !f.matches("ib0"));
        let f = IfFilter::parse("=eth0").unwrap();
        assert!(f.matches("eth0") && !f.matches("eth01"));
        let f = IfFilter::parse("^=docker0").unwrap();
        assert!(!f.matches("docker0") && f.matches("docker01"));
        assert!(IfFilter::parse(" , ").is_err());
    }

    #[test]
    fn loopback_is_found_by_name() {
        let lo = choose(Some("=lo")).expect("the loopback interface");
        assert!(lo.loopback);
        assert!(choose(Some("=no-such-interface0")).is_err());
    }
}
