//! Scripted faults: a queue of rules consumed by matching API requests in order, plus the
//! standing "poison" prefixes that turn a supplier batch into a validation error.

use serde::{Deserialize, Serialize};

/// Which API operation a request is (and which a rule applies to).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    Supplier,
    Begin,
    Complete,
    Fail,
    State,
    Reset,
    /// Rules only: matches every operation.
    Any,
}

/// A rule as posted: every field checked, so a misspelt key is a 400 naming it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleBody {
    op: Op,
    times: Option<u32>,
    action: String,
    status: Option<u16>,
    retry_after: Option<String>,
    body: Option<String>,
    delay_ms: Option<u64>,
    prefix: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// Answer this instead of applying the request.
    Status {
        status: u16,
        retry_after: Option<String>,
        body: Option<String>,
    },
    /// Wait, then proceed normally.
    Delay { delay_ms: u64 },
    /// Apply the request, then close the connection without an answer.
    DropAfterApply,
    /// Close the connection without applying anything.
    Reset,
}

impl Action {
    pub fn name(&self) -> &'static str {
        match self {
            Action::Status { .. } => "status",
            Action::Delay { .. } => "delay",
            Action::DropAfterApply => "drop_after_apply",
            Action::Reset => "reset",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Rule {
    pub op: Op,
    pub times: u32,
    #[serde(flatten)]
    pub action: Action,
}

#[derive(Default, Serialize)]
pub struct Faults {
    pub rules: Vec<Rule>,
    pub poison: Vec<String>,
}

impl Faults {
    /// Validates every posted rule first, so a bad one adds none of them.
    pub fn add(&mut self, body: &[u8]) -> Result<(), String> {
        let posted: Vec<RuleBody> = crate::schema::parse(body)?;
        let mut rules = Vec::new();
        let mut poison = Vec::new();
        for (i, r) in posted.into_iter().enumerate() {
            let what = |field: &str| format!("rule {i}: action {:?} needs `{field}`", r.action);
            let times = r.times.unwrap_or(1);
            if times == 0 {
                return Err(format!("rule {i}: times must be at least 1"));
            }
            let action = match r.action.as_str() {
                "status" => {
                    let status = r.status.ok_or_else(|| what("status"))?;
                    if !(100..=599).contains(&status) {
                        return Err(format!("rule {i}: status {status} is not an HTTP status"));
                    }
                    if let Some(ra) = &r.retry_after
                        && hyper::header::HeaderValue::from_str(ra).is_err()
                    {
                        return Err(format!("rule {i}: retry_after is not a header value"));
                    }
                    Action::Status {
                        status,
                        retry_after: r.retry_after,
                        body: r.body,
                    }
                }
                "delay" => Action::Delay {
                    delay_ms: r.delay_ms.ok_or_else(|| what("delay_ms"))?,
                },
                "drop_after_apply" => Action::DropAfterApply,
                "reset" => Action::Reset,
                "poison" => {
                    let prefix = r.prefix.filter(|p| !p.is_empty()).ok_or_else(|| what("prefix"))?;
                    poison.push(prefix);
                    continue;
                }
                other => {
                    return Err(format!(
                        "rule {i}: unknown action {other:?} (status, delay, drop_after_apply, reset, poison)"
                    ));
                }
            };
            rules.push(Rule {
                op: r.op,
                times,
                action,
            });
        }
        self.rules.extend(rules);
        self.poison.extend(poison);
        Ok(())
    }

    /// The first queued rule for `op` (or `any`), used once.
    pub fn take(&mut self, op: Op) -> Option<Action> {
        let i = self.rules.iter().position(|r| r.op == op || r.op == Op::Any)?;
        let rule = &mut self.rules[i];
        rule.times -= 1;
        let action = rule.action.clone();
        if rule.times == 0 {
            self.rules.remove(i);
        }
        Some(action)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_are_used_in_order_and_only_by_their_op() {
        let mut f = Faults::default();
        f.add(
            br#"[{"op": "complete", "action": "reset"},
                 {"op": "any", "times": 2, "action": "delay", "delay_ms": 5},
                 {"op": "supplier", "action": "poison", "prefix": "BAD-"}]"#,
        )
        .unwrap();
        assert_eq!(f.poison, ["BAD-"]);
        assert!(matches!(f.take(Op::Begin), Some(Action::Delay { delay_ms: 5 })));
        assert!(matches!(f.take(Op::Complete), Some(Action::Reset)));
        assert!(matches!(f.take(Op::Supplier), Some(Action::Delay { .. })));
        assert!(f.take(Op::Supplier).is_none());
    }

    #[test]
    fn a_bad_rule_adds_none_and_names_its_problem() {
        let mut f = Faults::default();
        let err = f
            .add(br#"[{"op": "begin", "action": "reset"}, {"op": "begin", "action": "status"}]"#)
            .unwrap_err();
        assert!(err.contains("rule 1") && err.contains("`status`"), "{err}");
        assert!(f.rules.is_empty());
        let err = f
            .add(br#"[{"op": "begin", "action": "reset", "delay": 1}]"#)
            .unwrap_err();
        assert!(err.contains("unknown field `delay`"), "{err}");
    }
}
