//! Renderings of flows and tallies: `conntrack -L` text, JSON Lines, terminal tables.

pub mod conntrack;
pub mod expect;
pub mod interval;
pub mod json;
pub mod jsonl;
pub mod live;
pub mod look;
pub mod report;
