//! Audit entries as DynamoDB items, and typed reads of item attributes that
//! report what is wrong instead of panicking.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, SecondsFormat, Utc};
use flamingock_core::{AuditEntry, AuditState, ErrorInfo, RecoveryStrategy, TxStrategy};

pub(crate) type Item = HashMap<String, AttributeValue>;

/// Partition key of current-state items.
pub(crate) const CURRENT: &str = "CURRENT";
/// Partition and sort key of the fence item.
pub(crate) const FENCE: &str = "FENCE";
/// Prefix of the partition key of history items.
pub(crate) const HISTORY: &str = "HISTORY#";

pub(crate) fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

pub(crate) fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

pub(crate) fn key(pk: impl Into<String>, sk: impl Into<String>) -> Item {
    HashMap::from([("pk".to_owned(), s(pk)), ("sk".to_owned(), s(sk))])
}

/// `created_at` as fixed-width RFC 3339 with nanoseconds, so that string
/// order (what DynamoDB compares in conditions and sort keys) is time order.
pub(crate) fn timestamp(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Nanos, true)
}

pub(crate) fn history_pk(change_id: &str) -> String {
    format!("{HISTORY}{change_id}")
}

/// The key of an item, for error messages: `pk`/`sk` when present (our
/// tables), otherwise the item's attributes (a key map has only key attributes).
pub(crate) fn describe_key(item: &Item) -> String {
    let show = |v: &AttributeValue| match v {
        AttributeValue::S(v) => v.clone(),
        AttributeValue::N(v) => v.clone(),
        other => format!("{other:?}"),
    };
    let ours: Vec<String> = ["pk", "sk"]
        .iter()
        .filter_map(|k| item.get(*k).map(|v| format!("{k}={}", show(v))))
        .collect();
    if !ours.is_empty() {
        return ours.join(" ");
    }
    let mut names: Vec<&String> = item.keys().collect();
    names.sort();
    let mut parts: Vec<String> = names
        .iter()
        .take(3)
        .map(|k| format!("{k}={}", item.get(*k).map(show).unwrap_or_default()))
        .collect();
    if names.len() > 3 {
        parts.push("...".to_owned());
    }
    parts.join(" ")
}

/// Typed attribute reads. Each error says which attribute and why.
pub(crate) struct Reader<'a>(pub(crate) &'a Item);

impl Reader<'_> {
    pub(crate) fn str(&self, name: &str) -> Result<&str, String> {
        match self.0.get(name) {
            Some(AttributeValue::S(v)) => Ok(v),
            Some(other) => Err(format!(
                "attribute '{name}' should be a string, got {other:?}"
            )),
            None => Err(format!("attribute '{name}' is missing")),
        }
    }

    pub(crate) fn opt_str(&self, name: &str) -> Result<Option<&str>, String> {
        match self.0.get(name) {
            None | Some(AttributeValue::Null(_)) => Ok(None),
            Some(_) => self.str(name).map(Some),
        }
    }

    pub(crate) fn u64(&self, name: &str) -> Result<u64, String> {
        match self.0.get(name) {
            Some(AttributeValue::N(v)) => v.parse().map_err(|_| {
                format!("attribute '{name}' should be a non-negative integer, got {v:?}")
            }),
            Some(other) => Err(format!(
                "attribute '{name}' should be a number, got {other:?}"
            )),
            None => Err(format!("attribute '{name}' is missing")),
        }
    }

    pub(crate) fn opt_u64(&self, name: &str) -> Result<Option<u64>, String> {
        match self.0.get(name) {
            None => Ok(None),
            Some(_) => self.u64(name).map(Some),
        }
    }

    pub(crate) fn i64(&self, name: &str) -> Result<i64, String> {
        match self.0.get(name) {
            Some(AttributeValue::N(v)) => v
                .parse()
                .map_err(|_| format!("attribute '{name}' should be an integer, got {v:?}")),
            Some(other) => Err(format!(
                "attribute '{name}' should be a number, got {other:?}"
            )),
            None => Err(format!("attribute '{name}' is missing")),
        }
    }

    fn bool(&self, name: &str) -> Result<bool, String> {
        match self.0.get(name) {
            Some(AttributeValue::Bool(v)) => Ok(*v),
            Some(other) => Err(format!(
                "attribute '{name}' should be a boolean, got {other:?}"
            )),
            None => Err(format!("attribute '{name}' is missing")),
        }
    }

    fn time(&self, name: &str) -> Result<DateTime<Utc>, String> {
        let raw = self.str(name)?;
        DateTime::parse_from_rfc3339(raw)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| format!("attribute '{name}' is not an RFC 3339 time ({raw:?}): {e}"))
    }

    fn parsed<T: std::str::FromStr>(&self, name: &str) -> Result<T, String>
    where
        T::Err: std::fmt::Display,
    {
        let raw = self.str(name)?;
        raw.parse().map_err(|e| format!("attribute '{name}': {e}"))
    }

    fn error(&self) -> Result<Option<ErrorInfo>, String> {
        let m = match self.0.get("error") {
            None | Some(AttributeValue::Null(_)) => return Ok(None),
            Some(AttributeValue::M(m)) => m,
            Some(other) => return Err(format!("attribute 'error' should be a map, got {other:?}")),
        };
        let inner = Reader(m);
        let message = inner
            .str("message")
            .map_err(|e| format!("in 'error': {e}"))?
            .to_owned();
        let chain = match m.get("chain") {
            None => Vec::new(),
            Some(AttributeValue::L(items)) => items
                .iter()
                .map(|v| match v {
                    AttributeValue::S(s) => Ok(s.clone()),
                    other => Err(format!("'error.chain' should hold strings, got {other:?}")),
                })
                .collect::<Result<_, _>>()?,
            Some(other) => return Err(format!("'error.chain' should be a list, got {other:?}")),
        };
        Ok(Some(ErrorInfo { message, chain }))
    }
}

/// The item of `entry` under `pk`/`sk` (history and current-state items share
/// one shape).
pub(crate) fn entry_item(entry: &AuditEntry, pk: String, sk: String) -> Item {
    let mut item = key(pk, sk);
    let mut put = |k: &str, v: AttributeValue| {
        item.insert(k.to_owned(), v);
    };
    put("change_id", s(&entry.change_id));
    put("run_id", s(&entry.run_id));
    put("stage_id", s(&entry.stage_id));
    put("author", s(&entry.author));
    put("change_order", s(&entry.order));
    put("target_system", s(&entry.target_system));
    put("state", s(entry.state.as_str()));
    put("state_rank", n(entry.state.rank()));
    put("created_at", s(timestamp(&entry.created_at)));
    put("duration_ms", n(entry.duration_ms));
    put("hostname", s(&entry.hostname));
    put("runner_id", s(&entry.runner_id));
    if let Some(e) = &entry.error {
        put(
            "error",
            AttributeValue::M(HashMap::from([
                ("message".to_owned(), s(&e.message)),
                (
                    "chain".to_owned(),
                    AttributeValue::L(e.chain.iter().map(s).collect()),
                ),
            ])),
        );
    }
    // JSON text: an exact round trip of any JSON value (DynamoDB maps would
    // turn integers and floats into one number type).
    put("metadata", s(entry.metadata.to_string()));
    put("tx_strategy", s(entry.tx_strategy.as_str()));
    put("recovery", s(entry.recovery.as_str()));
    put("transactional", AttributeValue::Bool(entry.transactional));
    put("fencing_token", n(entry.fencing_token));
    if let Some(c) = &entry.checksum {
        put("checksum", s(c));
    }
    item
}

/// Reads an entry back; `Err` says what is wrong.
pub(crate) fn parse_entry(item: &Item) -> Result<AuditEntry, String> {
    let r = Reader(item);
    let state: AuditState = r.parsed("state")?;
    let mut e = AuditEntry::new(r.str("change_id")?, state, r.u64("fencing_token")?);
    e.run_id = r.str("run_id")?.to_owned();
    e.stage_id = r.str("stage_id")?.to_owned();
    e.author = r.str("author")?.to_owned();
    e.order = r.str("change_order")?.to_owned();
    e.target_system = r.str("target_system")?.to_owned();
    e.created_at = r.time("created_at")?;
    e.duration_ms = r.u64("duration_ms")?;
    e.hostname = r.str("hostname")?.to_owned();
    e.runner_id = r.str("runner_id")?.to_owned();
    e.error = r.error()?;
    let meta = r.str("metadata")?;
    e.metadata = serde_json::from_str(meta)
        .map_err(|err| format!("attribute 'metadata' is not JSON: {err}"))?;
    e.tx_strategy = r.parsed::<TxStrategy>("tx_strategy")?;
    e.recovery = r.parsed::<RecoveryStrategy>("recovery")?;
    e.transactional = r.bool("transactional")?;
    e.checksum = r.opt_str("checksum")?.map(str::to_owned);
    Ok(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_sort_as_strings() {
        let a: DateTime<Utc> = "2024-01-01T00:00:00Z".parse().expect("time");
        let b = a + chrono::Duration::nanoseconds(1);
        let c = a + chrono::Duration::seconds(1);
        let (ta, tb, tc) = (timestamp(&a), timestamp(&b), timestamp(&c));
        assert_eq!(ta, "2024-01-01T00:00:00.000000000Z");
        assert!(ta < tb && tb < tc);
    }

    #[test]
    fn entry_round_trip_and_malformed_items() {
        let mut e = AuditEntry::new("c1", AuditState::Failed, 7);
        e.error = Some(ErrorInfo {
            message: "boom".into(),
            chain: vec!["cause".into()],
        });
        e.metadata = serde_json::json!({"a": [1, 2.5, null]});
        e.checksum = Some("x".into());
        let item = entry_item(&e, "CURRENT".into(), "c1".into());
        let back = parse_entry(&item).expect("parse");
        assert_eq!(back, e.clone().at(back.created_at));
        assert_eq!(timestamp(&back.created_at), timestamp(&e.created_at));

        let mut bad = item.clone();
        bad.insert("state".into(), s("DONE"));
        assert!(parse_entry(&bad).expect_err("malformed").contains("DONE"));
        let mut bad = item.clone();
        bad.remove("created_at");
        assert!(parse_entry(&bad)
            .expect_err("malformed")
            .contains("created_at"));
        let mut bad = item.clone();
        bad.insert("fencing_token".into(), s("7"));
        assert!(parse_entry(&bad)
            .expect_err("malformed")
            .contains("fencing_token"));
        let mut bad = item;
        bad.insert("metadata".into(), s("{not json"));
        assert!(parse_entry(&bad)
            .expect_err("malformed")
            .contains("metadata"));
    }
}
