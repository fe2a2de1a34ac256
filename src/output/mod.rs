//! Renderings of flows and tallies: `conntrack -L` text, JSON Lines, terminal tables.
