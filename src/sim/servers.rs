//! Servers, not pool entries: the machines behind the config, each counted once.
//!
//! A pool lists backends; a **server** is a backend's address after resolution
//! (DESIGN "Words"). The same server may be listed by several pools, and by a backup
//! pool — under one name or several (`app-1.internal:80` and `10.0.0.7:80` are one
//! server when they resolve alike). What a server carries is the sum of what every
//! pool sends it, and when it fails it fails in every pool at once; so the failure
//! analysis ([`super::failures`]) and the cross-pool load ratio work on servers.
//!
//! A server's `capacity` is one fact about it: validation refuses a config that lists
//! the same server with two capacities (`capacity-conflict`), so the first entry's
//! capacity is every entry's.

use std::collections::HashMap;
use std::net::SocketAddr;

use crate::config::Config;

/// Where a server is listed: a pool and a position in its `backends`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Position of the pool in `Config::pools`.
    pub pool: usize,
    /// Position of the backend in the pool's `backends`.
    pub backend: usize,
}

/// One server.
#[derive(Clone, Debug, PartialEq)]
pub struct Server {
    /// Its address after resolution.
    pub address: SocketAddr,
    /// Its address as the config first writes it (how findings and tables name it).
    pub name: String,
    /// Its capacity (the same in every entry).
    pub capacity: f64,
    /// Every entry that lists it, in config order.
    pub entries: Vec<Entry>,
}

/// The servers of a config, in order of first appearance.
#[derive(Clone, Debug, PartialEq)]
pub struct Servers {
    /// Every server.
    pub list: Vec<Server>,
    /// `of_entry[pool][backend]`: the server a pool entry is.
    pub of_entry: Vec<Vec<usize>>,
}

impl Servers {
    /// The servers of `config`.
    pub fn of(config: &Config) -> Servers {
        let mut list: Vec<Server> = Vec::new();
        let mut by_address: HashMap<SocketAddr, usize> = HashMap::new();
        let mut of_entry = Vec::with_capacity(config.pools.len());
        for (p, pool) in config.pools.iter().enumerate() {
            let mut entries = Vec::with_capacity(pool.backends.len());
            for (b, backend) in pool.backends.iter().enumerate() {
                let index = *by_address.entry(backend.socket_addr).or_insert_with(|| {
                    list.push(Server {
                        address: backend.socket_addr,
                        name: backend.address.clone(),
                        capacity: backend.capacity,
                        entries: Vec::new(),
                    });
                    list.len() - 1
                });
                list[index].entries.push(Entry {
                    pool: p,
                    backend: b,
                });
                entries.push(index);
            }
            of_entry.push(entries);
        }
        Servers { list, of_entry }
    }

    /// The server a command-line argument names: an address as the config writes it
    /// (any of its names), or the address it resolves to.
    pub fn find(&self, config: &Config, name: &str) -> Option<usize> {
        let by_text = self.list.iter().position(|s| {
            s.entries
                .iter()
                .any(|e| config.pools[e.pool].backends[e.backend].address == name)
        });
        by_text.or_else(|| {
            let address: SocketAddr = name.parse().ok()?;
            self.list.iter().position(|s| s.address == address)
        })
    }

    /// The names of the pools that list server `s`, without repeats, in config order.
    pub fn pools_of<'a>(&self, config: &'a Config, s: usize) -> Vec<&'a str> {
        let mut names: Vec<&str> = Vec::new();
        for e in &self.list[s].entries {
            let name = config.pools[e.pool].name.as_str();
            if !names.contains(&name) {
                names.push(name);
            }
        }
        names
    }
}
