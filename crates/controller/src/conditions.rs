//! Condition lists as Kubernetes keeps them: one entry per type, `lastTransitionTime` moving only
//! when the status changes.

use ferrovirt_api::kubevirt::{Condition, ConditionStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

/// The condition of type `type_`, if present.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Whether the condition `type_` is present with `status`.
pub fn has_status(conditions: &[Condition], type_: &str, status: ConditionStatus) -> bool {
    find(conditions, type_).is_some_and(|c| c.status == status)
}

/// Sets `type_` to `status`/`reason`/`message`. An entry that already says the same is left as it
/// is (times included); a changed status gets `now` as its transition time; a changed reason or
/// message alone keeps the transition time.
pub fn set(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: ConditionStatus,
    reason: Option<&str>,
    message: Option<&str>,
    now: Timestamp,
) {
    let wanted_reason = reason.map(str::to_string);
    let wanted_message = message.map(str::to_string);
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(c) if c.status == status && c.reason == wanted_reason && c.message == wanted_message => {}
        Some(c) => {
            if c.status != status || c.last_transition_time.is_none() {
                c.last_transition_time = Some(Time(now));
            }
            c.status = status;
            c.reason = wanted_reason;
            c.message = wanted_message;
            c.last_probe_time = None;
        }
        None => conditions.push(Condition {
            type_: type_.to_string(),
            status,
            last_probe_time: None,
            last_transition_time: Some(Time(now)),
            reason: wanted_reason,
            message: wanted_message,
        }),
    }
}

/// Copies `condition` (times included) over the entry of the same type, or appends it.
pub fn put(conditions: &mut Vec<Condition>, condition: &Condition) {
    match conditions.iter_mut().find(|c| c.type_ == condition.type_) {
        Some(c) => *c = condition.clone(),
        None => conditions.push(condition.clone()),
    }
}

/// Removes the condition `type_`.
pub fn remove(conditions: &mut Vec<Condition>, type_: &str) {
    conditions.retain(|c| c.type_ != type_);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    #[test]
    fn transition_time_moves_only_with_the_status() {
        let mut c = Vec::new();
        set(&mut c, "Ready", ConditionStatus::False, Some("A"), None, t(1));
        assert_eq!(c[0].last_transition_time, Some(Time(t(1))));
        set(&mut c, "Ready", ConditionStatus::False, Some("A"), None, t(2));
        assert_eq!(c[0].last_transition_time, Some(Time(t(1))));
        set(&mut c, "Ready", ConditionStatus::False, Some("B"), Some("m"), t(3));
        assert_eq!(c[0].last_transition_time, Some(Time(t(1))));
        assert_eq!(c[0].reason.as_deref(), Some("B"));
        set(&mut c, "Ready", ConditionStatus::True, None, None, t(4));
        assert_eq!(c[0].last_transition_time, Some(Time(t(4))));
        assert_eq!(c.len(), 1);
        remove(&mut c, "Ready");
        assert!(c.is_empty());
    }
}
