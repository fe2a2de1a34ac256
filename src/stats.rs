//! The table's figures: how full it is and what each CPU counted (`conntrack -C`, `conntrack -S`).
//!
//! Plain values; `ctnetlink` fills them from `IPCTNL_MSG_CT_GET_STATS` and `GET_STATS_CPU`.

/// Global table figures (`conntrack -C`, read with `IPCTNL_MSG_CT_GET_STATS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TableStats {
    /// Entries in this namespace (`nf_conntrack_count`).
    pub count: u32,
    /// The global `nf_conntrack_max`, compared with each namespace's own count.
    pub max: u32,
}

/// Per-CPU counters from `IPCTNL_MSG_CT_GET_STATS_CPU` (what `conntrack -S` prints).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CpuStats {
    /// CPU number (`nfgenmsg.res_id`).
    pub cpu: u16,
    /// Lookups that found an entry.
    pub found: u32,
    /// Packets that could not be tracked.
    pub invalid: u32,
    /// Entries inserted.
    pub insert: u32,
    /// Confirm-time clashes that could not be resolved.
    pub insert_failed: u32,
    /// Packets dropped because no entry could be allocated: the table-full signal.
    pub drop: u32,
    /// Non-assured entries evicted to make room.
    pub early_drop: u32,
    /// Errors.
    pub error: u32,
    /// Lookups restarted.
    pub search_restart: u32,
    /// Clashes resolved.
    pub clash_resolve: u32,
    /// Inserts refused for an over-long hash chain.
    pub chaintoolong: u32,
}

impl CpuStats {
    /// Field names in `conntrack -S` order with their values.
    pub fn fields(&self) -> [(&'static str, u32); 10] {
        [
            ("found", self.found),
            ("invalid", self.invalid),
            ("insert", self.insert),
            ("insert_failed", self.insert_failed),
            ("drop", self.drop),
            ("early_drop", self.early_drop),
            ("error", self.error),
            ("search_restart", self.search_restart),
            ("clash_resolve", self.clash_resolve),
            ("chaintoolong", self.chaintoolong),
        ]
    }

    /// Adds another CPU's counters (wrapping, as the kernel's u32 counters do).
    pub fn add(&mut self, o: &CpuStats) {
        self.found = self.found.wrapping_add(o.found);
        self.invalid = self.invalid.wrapping_add(o.invalid);
        self.insert = self.insert.wrapping_add(o.insert);
        self.insert_failed = self.insert_failed.wrapping_add(o.insert_failed);
        self.drop = self.drop.wrapping_add(o.drop);
        self.early_drop = self.early_drop.wrapping_add(o.early_drop);
        self.error = self.error.wrapping_add(o.error);
        self.search_restart = self.search_restart.wrapping_add(o.search_restart);
        self.clash_resolve = self.clash_resolve.wrapping_add(o.clash_resolve);
        self.chaintoolong = self.chaintoolong.wrapping_add(o.chaintoolong);
    }
}
