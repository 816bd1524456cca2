//! Slowing down admin token guessing (docs/security.md#admin-authentication): after
//! `max_failures` failed admin authentications from one client address within `window`,
//! every admin authentication from that address — right or wrong — is answered `429` with
//! `Retry-After` until the window that began with its first failure has passed.
//!
//! Both doors count: the bearer token of the admin API and the dashboard's sign-in form.
//! Only presented credentials count as failures (a request without any token is not a guess).
//!
//! The client address is the TCP peer. IPv6 addresses count by their /64 prefix, the block a
//! single host usually has. Behind a reverse proxy every client has the proxy's address, so the
//! throttle then applies to all of them together (docs/operations.md).
//!
//! Memory is bounded: at most [`CAPACITY`] addresses are tracked. When the table is full of
//! addresses whose windows are still open, a new address shares one overflow entry with every
//! other untracked address: a guesser with very many addresses is still slowed down, and the
//! table never grows.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Addresses tracked at most.
pub const CAPACITY: usize = 10_000;

/// Expired entries are swept at most this often (a sweep walks the whole table).
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// Who is guessing, as far as the throttle can tell.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Client {
    V4([u8; 4]),
    /// The first 64 bits of an IPv6 address.
    V6Prefix([u8; 8]),
    /// No peer address (a Unix socket, a test request).
    Unknown,
    /// Every address that found the table full.
    Overflow,
}

impl Client {
    pub fn of(addr: Option<IpAddr>) -> Client {
        match addr {
            None => Client::Unknown,
            Some(IpAddr::V4(v4)) => Client::V4(v4.octets()),
            Some(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
                Some(v4) => Client::V4(v4.octets()),
                None => {
                    let o = v6.octets();
                    Client::V6Prefix([o[0], o[1], o[2], o[3], o[4], o[5], o[6], o[7]])
                }
            },
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    started: Instant,
    failures: u32,
}

#[derive(Debug)]
struct Table {
    entries: HashMap<Client, Entry>,
    last_sweep: Option<Instant>,
}

/// The per-address failure table. One per server, shared by every worker.
#[derive(Debug)]
pub struct AuthThrottle {
    max_failures: u32,
    window: Duration,
    capacity: usize,
    table: Mutex<Table>,
}

impl AuthThrottle {
    pub fn new(max_failures: u32, window: Duration) -> AuthThrottle {
        Self::with_capacity(max_failures, window, CAPACITY)
    }

    pub fn with_capacity(max_failures: u32, window: Duration, capacity: usize) -> AuthThrottle {
        AuthThrottle {
            max_failures: max_failures.max(1),
            window,
            capacity: capacity.max(1),
            table: Mutex::new(Table {
                entries: HashMap::new(),
                last_sweep: None,
            }),
        }
    }

    /// `Err(retry_after)` while `client` has used up its failures; call before authenticating.
    pub fn check(&self, client: Client, now: Instant) -> Result<(), Duration> {
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        let key = self.slot(&mut table, client, now);
        match table.entries.get(&key) {
            Some(e) if self.open(e, now) && e.failures >= self.max_failures => {
                Err((e.started + self.window).saturating_duration_since(now))
            }
            _ => Ok(()),
        }
    }

    /// Counts one failed authentication by `client`.
    pub fn failed(&self, client: Client, now: Instant) {
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        let key = self.slot(&mut table, client, now);
        let entry = table.entries.entry(key).or_insert(Entry {
            started: now,
            failures: 0,
        });
        if !self.open(entry, now) {
            *entry = Entry {
                started: now,
                failures: 0,
            };
        }
        entry.failures = entry.failures.saturating_add(1);
        if entry.failures == self.max_failures {
            tracing::warn!(
                client = ?key,
                window_secs = self.window.as_secs(),
                "admin authentication failures over the limit: further attempts get 429"
            );
        }
    }

    /// Addresses tracked now (for tests and metrics).
    pub fn tracked(&self) -> usize {
        let table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        table.entries.len()
    }

    fn open(&self, e: &Entry, now: Instant) -> bool {
        now < e.started + self.window
    }

    /// The entry that counts for `client`: its own, or the overflow entry when the table is
    /// full (after sweeping closed windows, at most once per [`SWEEP_EVERY`]).
    fn slot(&self, table: &mut Table, client: Client, now: Instant) -> Client {
        if table.entries.contains_key(&client) {
            return client;
        }
        // One slot is kept for the overflow entry.
        if table.entries.len() + 1 >= self.capacity {
            let due = table
                .last_sweep
                .is_none_or(|t| now.saturating_duration_since(t) >= SWEEP_EVERY);
            if due {
                let window = self.window;
                table.entries.retain(|_, e| now < e.started + window);
                table.last_sweep = Some(now);
            }
        }
        if table.entries.len() + 1 >= self.capacity {
            Client::Overflow
        } else {
            client
        }
    }
}

/// The `Retry-After` value for `wait`: whole seconds, rounded up, at least 1.
pub fn retry_after_secs(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn v4(last: u8) -> Client {
        Client::of(Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, last))))
    }

    #[test]
    fn blocks_after_the_limit_until_the_window_passes() {
        let t = AuthThrottle::new(3, Duration::from_secs(60));
        let start = Instant::now();
        for i in 0..3 {
            assert_eq!(t.check(v4(1), start), Ok(()), "attempt {i}");
            t.failed(v4(1), start + Duration::from_secs(i));
        }
        let wait = t.check(v4(1), start + Duration::from_secs(10)).unwrap_err();
        assert_eq!(wait, Duration::from_secs(50));
        assert_eq!(retry_after_secs(wait), 50);
        // Another address is not affected.
        assert_eq!(t.check(v4(2), start), Ok(()));
        // The window began with the first failure.
        assert!(t.check(v4(1), start + Duration::from_secs(59)).is_err());
        assert_eq!(t.check(v4(1), start + Duration::from_secs(60)), Ok(()));
        t.failed(v4(1), start + Duration::from_secs(61));
        assert_eq!(t.check(v4(1), start + Duration::from_secs(61)), Ok(()));
    }

    #[test]
    fn ipv6_counts_by_64_prefix_and_mapped_v4_as_v4() {
        let a: Ipv6Addr = "2001:db8:1:2::1".parse().unwrap();
        let b: Ipv6Addr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: Ipv6Addr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(Client::of(Some(a.into())), Client::of(Some(b.into())));
        assert_ne!(Client::of(Some(a.into())), Client::of(Some(c.into())));
        let mapped: Ipv6Addr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(Client::of(Some(mapped.into())), v4(7));
    }

    #[test]
    fn memory_is_bounded_and_overflow_still_throttles() {
        let t = AuthThrottle::with_capacity(2, Duration::from_secs(60), 100);
        let now = Instant::now();
        for i in 0..5_000u32 {
            let client = Client::of(Some(IpAddr::V4(Ipv4Addr::from(i))));
            t.failed(client, now);
        }
        assert!(t.tracked() <= 100, "{}", t.tracked());
        // Untracked addresses share the overflow entry, which is over the limit.
        let fresh = Client::of(Some(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9))));
        assert!(t.check(fresh, now).is_err());
        // Once the windows have closed, the table is swept and new addresses are tracked.
        let later = now + Duration::from_secs(61);
        assert_eq!(t.check(fresh, later), Ok(()));
        t.failed(fresh, later);
        assert!(t.tracked() <= 2, "{}", t.tracked());
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(59_001)), 60);
    }
}
