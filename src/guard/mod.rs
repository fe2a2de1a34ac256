//! The always-on guard (`ctguard guard`, issue 13): exact live counts per guest and state from
//! the live engine, a decision four times a second, relief without a human (an nftables
//! `ct count` cap on the guest that fills the table, then the evict engine on its stale
//! flows), and what it saw for Prometheus (`/metrics`) and for `top --live` (a unix socket).
//!
//! The rooms: `config` (the TOML file, checked whole before anything runs), `decide` (pure:
//! counts, kernel counters, config and clock in, actions out), `caps` (ctguard's own nftables
//! table), `metrics` (the exposition), `http` (`/metrics`), `query` (the socket `top --live`
//! asks), `daemon` (the loop that ties them to the live engine and the evict engine).
