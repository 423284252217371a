//! Events the reconcilers ask for, independent of how they are published.

/// Severity of an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    /// Something happened as expected.
    Normal,
    /// Something went wrong or needs attention.
    Warning,
}

/// An event about the object being reconciled (published as events.k8s.io/v1 by the runtime).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Normal or Warning.
    pub type_: EventType,
    /// Short PascalCase reason, e.g. `Started`.
    pub reason: String,
    /// What happened, for people.
    pub note: String,
}

impl Event {
    /// A Normal event.
    pub fn normal(reason: &str, note: impl Into<String>) -> Self {
        Event { type_: EventType::Normal, reason: reason.to_string(), note: note.into() }
    }

    /// A Warning event.
    pub fn warning(reason: &str, note: impl Into<String>) -> Self {
        Event { type_: EventType::Warning, reason: reason.to_string(), note: note.into() }
    }
}
