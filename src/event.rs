//! What happened to a flow: the three conntrack events (`conntrack -E`).

/// What happened to a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum EventKind {
    /// The kernel confirmed a new flow (or a RELATED one).
    New,
    /// State, status, mark, timeout, labels, ... changed.
    Update,
    /// The flow ended: deleted, flushed, or reaped after its timeout.
    Destroy,
}

impl EventKind {
    /// Every kind, in kernel group order.
    pub const ALL: [EventKind; 3] = [EventKind::New, EventKind::Update, EventKind::Destroy];

    /// `new`, `update`, `destroy`: the `--event` values and the JSON `type`.
    pub fn name(self) -> &'static str {
        match self {
            EventKind::New => "new",
            EventKind::Update => "update",
            EventKind::Destroy => "destroy",
        }
    }

    /// The tag `conntrack -E` prints: `[NEW]`, `[UPDATE]`, `[DESTROY]`.
    pub fn tag(self) -> &'static str {
        match self {
            EventKind::New => "[NEW]",
            EventKind::Update => "[UPDATE]",
            EventKind::Destroy => "[DESTROY]",
        }
    }

    /// Parses a name, case-insensitively.
    pub fn parse(s: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.name().eq_ignore_ascii_case(s))
    }
}
