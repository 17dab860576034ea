//! Audit entries to and from BSON documents, and reading of driver errors.
//!
//! Every read goes through [`Reader`], which names the collection and `_id`
//! of a document of the wrong shape instead of panicking.

use chrono::{DateTime, TimeZone, Utc};
use flamingock_core::{AuditEntry, AuditState, ErrorInfo, RecoveryStrategy, TxStrategy};
use mongodb::bson::{self, doc, Bson, Document};
use mongodb::error::{Error as DriverError, ErrorKind, WriteFailure};

/// MongoDB's duplicate-key error code.
pub(crate) const DUPLICATE_KEY: i32 = 11000;
/// `NamespaceExists`: the collection is already there.
pub(crate) const NAMESPACE_EXISTS: i32 = 48;

/// The server error code of a command or write error, if it is one.
pub(crate) fn error_code(e: &DriverError) -> Option<i32> {
    match &*e.kind {
        ErrorKind::Command(c) => Some(c.code),
        ErrorKind::Write(WriteFailure::WriteError(w)) => Some(w.code),
        ErrorKind::Write(WriteFailure::WriteConcernError(w)) => Some(w.code),
        _ => None,
    }
}

/// Whether `e` is a duplicate-key error.
pub(crate) fn is_duplicate_key(e: &DriverError) -> bool {
    error_code(e) == Some(DUPLICATE_KEY)
}

/// A BSON date from a chrono time (millisecond precision, as BSON stores it).
pub(crate) fn to_bson_date(t: DateTime<Utc>) -> bson::DateTime {
    bson::DateTime::from_millis(t.timestamp_millis())
}

/// A chrono time from a BSON date.
pub(crate) fn from_bson_date(d: bson::DateTime) -> Option<DateTime<Utc>> {
    Utc.timestamp_millis_opt(d.timestamp_millis()).single()
}

/// An unsigned counter as BSON `Int64`; `None` when it does not fit.
pub(crate) fn u64_to_bson(v: u64) -> Option<Bson> {
    i64::try_from(v).ok().map(Bson::Int64)
}

/// JSON metadata as native BSON, so that operators can query it.
pub(crate) fn json_to_bson(v: &serde_json::Value) -> Bson {
    use serde_json::Value;
    match v {
        Value::Null => Bson::Null,
        Value::Bool(b) => Bson::Boolean(*b),
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => Bson::Int64(i),
            // Beyond i64 (u64 above i64::MAX) or fractional: a double.
            (None, Some(f)) => Bson::Double(f),
            (None, None) => Bson::String(n.to_string()),
        },
        Value::String(s) => Bson::String(s.clone()),
        Value::Array(a) => Bson::Array(a.iter().map(json_to_bson).collect()),
        Value::Object(o) => Bson::Document(
            o.iter()
                .map(|(k, v)| (k.clone(), json_to_bson(v)))
                .collect(),
        ),
    }
}

/// BSON back to JSON; types JSON lacks become their relaxed extended-JSON form.
pub(crate) fn bson_to_json(b: &Bson) -> serde_json::Value {
    use serde_json::Value;
    match b {
        Bson::Null | Bson::Undefined => Value::Null,
        Bson::Boolean(v) => Value::Bool(*v),
        Bson::Int32(i) => Value::from(*i),
        Bson::Int64(i) => Value::from(*i),
        Bson::Double(f) => serde_json::Number::from_f64(*f)
            .map(Value::Number)
            .unwrap_or(Value::Null),
        Bson::String(s) => Value::String(s.clone()),
        Bson::Array(a) => Value::Array(a.iter().map(bson_to_json).collect()),
        Bson::Document(d) => Value::Object(
            d.iter()
                .map(|(k, v)| (k.clone(), bson_to_json(v)))
                .collect(),
        ),
        other => other.clone().into_relaxed_extjson(),
    }
}

/// Field names of audit documents.
pub(crate) mod field {
    pub(crate) const CHANGE_ID: &str = "change_id";
    pub(crate) const STATE: &str = "state";
    pub(crate) const RANK: &str = "state_rank";
    pub(crate) const CREATED_AT: &str = "created_at";
    pub(crate) const SEQ: &str = "seq";
    pub(crate) const FENCING_TOKEN: &str = "fencing_token";
    pub(crate) const PENDING: &str = "pending";
}

/// Encodes an entry (with its store-assigned `created_at` and sequence number).
///
/// Fails only when a counter does not fit in BSON's signed 64-bit integer.
pub(crate) fn encode_entry(e: &AuditEntry, seq: i64) -> Result<Document, String> {
    let token = u64_to_bson(e.fencing_token)
        .ok_or_else(|| format!("fencing token {} does not fit in Int64", e.fencing_token))?;
    let duration = u64_to_bson(e.duration_ms)
        .ok_or_else(|| format!("duration {} ms does not fit in Int64", e.duration_ms))?;
    let error = match &e.error {
        Some(err) => Bson::Document(doc! { "message": &err.message, "chain": &err.chain }),
        None => Bson::Null,
    };
    Ok(doc! {
        field::CHANGE_ID: &e.change_id,
        "run_id": &e.run_id,
        "stage_id": &e.stage_id,
        "author": &e.author,
        "order": &e.order,
        "target_system": &e.target_system,
        field::STATE: e.state.as_str(),
        field::RANK: i32::from(e.state.rank()),
        field::CREATED_AT: to_bson_date(e.created_at),
        "duration_ms": duration,
        "hostname": &e.hostname,
        "runner_id": &e.runner_id,
        "error": error,
        "metadata": json_to_bson(&e.metadata),
        "tx_strategy": e.tx_strategy.as_str(),
        "recovery": e.recovery.as_str(),
        "transactional": e.transactional,
        field::FENCING_TOKEN: token,
        "checksum": e.checksum.as_deref().map_or(Bson::Null, |c| Bson::String(c.to_owned())),
        field::SEQ: seq,
    })
}

/// Reads fields of one stored document, naming it in every error.
pub(crate) struct Reader<'a> {
    pub(crate) doc: &'a Document,
    /// "collection X, _id Y".
    pub(crate) what: String,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(collection: &str, doc: &'a Document) -> Self {
        let id = doc
            .get("_id")
            .map_or_else(|| "<none>".to_owned(), ToString::to_string);
        Reader {
            doc,
            what: format!("document _id {id} in collection {collection}"),
        }
    }

    fn missing(&self, key: &str, want: &str) -> String {
        match self.doc.get(key) {
            None => format!("field '{key}' is missing (expected {want})"),
            Some(v) => format!(
                "field '{key}' is {:?} {v} (expected {want})",
                v.element_type()
            ),
        }
    }

    pub(crate) fn str(&self, key: &str) -> Result<String, String> {
        match self.doc.get(key) {
            Some(Bson::String(s)) => Ok(s.clone()),
            _ => Err(self.missing(key, "a string")),
        }
    }

    pub(crate) fn opt_str(&self, key: &str) -> Result<Option<String>, String> {
        match self.doc.get(key) {
            None | Some(Bson::Null) => Ok(None),
            Some(Bson::String(s)) => Ok(Some(s.clone())),
            _ => Err(self.missing(key, "a string or null")),
        }
    }

    pub(crate) fn i64(&self, key: &str) -> Result<i64, String> {
        match self.doc.get(key) {
            Some(Bson::Int64(i)) => Ok(*i),
            Some(Bson::Int32(i)) => Ok(i64::from(*i)),
            // Written by hand in a shell, integers often arrive as doubles.
            Some(Bson::Double(f)) if f.fract() == 0.0 && f.abs() < 9.0e15 => Ok(*f as i64),
            _ => Err(self.missing(key, "an integer")),
        }
    }

    pub(crate) fn opt_i64(&self, key: &str) -> Result<Option<i64>, String> {
        match self.doc.get(key) {
            None | Some(Bson::Null) => Ok(None),
            _ => self.i64(key).map(Some),
        }
    }

    pub(crate) fn u64(&self, key: &str) -> Result<u64, String> {
        let v = self.i64(key)?;
        u64::try_from(v).map_err(|_| format!("field '{key}' is negative ({v})"))
    }

    pub(crate) fn bool(&self, key: &str) -> Result<bool, String> {
        match self.doc.get(key) {
            Some(Bson::Boolean(b)) => Ok(*b),
            _ => Err(self.missing(key, "a boolean")),
        }
    }

    pub(crate) fn date(&self, key: &str) -> Result<DateTime<Utc>, String> {
        match self.doc.get(key) {
            Some(Bson::DateTime(d)) => {
                from_bson_date(*d).ok_or_else(|| format!("field '{key}' is out of range"))
            }
            _ => Err(self.missing(key, "a date")),
        }
    }

    fn parsed<T: std::str::FromStr>(&self, key: &str) -> Result<T, String>
    where
        T::Err: std::fmt::Display,
    {
        let s = self.str(key)?;
        s.parse::<T>().map_err(|e| format!("field '{key}': {e}"))
    }
}

/// Decodes an audit document; `Err` holds a description of what is wrong.
pub(crate) fn decode_entry(r: &Reader<'_>) -> Result<AuditEntry, String> {
    let state: AuditState = r.parsed(field::STATE)?;
    let error = match r.doc.get("error") {
        None | Some(Bson::Null) => None,
        Some(Bson::Document(d)) => {
            let inner = Reader {
                doc: d,
                what: r.what.clone(),
            };
            let chain = match d.get("chain") {
                None | Some(Bson::Null) => Vec::new(),
                Some(Bson::Array(a)) => a
                    .iter()
                    .map(|c| match c {
                        Bson::String(s) => Ok(s.clone()),
                        other => Err(format!("error.chain holds a non-string: {other}")),
                    })
                    .collect::<Result<_, _>>()?,
                Some(other) => return Err(format!("error.chain is not an array: {other}")),
            };
            Some(ErrorInfo {
                message: inner.str("message").map_err(|e| format!("error: {e}"))?,
                chain,
            })
        }
        Some(other) => return Err(format!("field 'error' is not a document: {other}")),
    };
    let mut e = AuditEntry::new(
        r.str(field::CHANGE_ID)?,
        state,
        r.u64(field::FENCING_TOKEN)?,
    );
    e.run_id = r.str("run_id")?;
    e.stage_id = r.str("stage_id")?;
    e.author = r.str("author")?;
    e.order = r.str("order")?;
    e.target_system = r.str("target_system")?;
    e.created_at = r.date(field::CREATED_AT)?;
    e.duration_ms = r.u64("duration_ms")?;
    e.hostname = r.str("hostname")?;
    e.runner_id = r.str("runner_id")?;
    e.error = error;
    e.metadata = r
        .doc
        .get("metadata")
        .map_or(serde_json::Value::Null, bson_to_json);
    e.tx_strategy = r.parsed::<TxStrategy>("tx_strategy")?;
    e.recovery = r.parsed::<RecoveryStrategy>("recovery")?;
    e.transactional = r.bool("transactional")?;
    e.checksum = r.opt_str("checksum")?;
    Ok(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_roundtrip() {
        let mut e = AuditEntry::new("a", AuditState::Failed, 7);
        e.metadata = serde_json::json!({"n": 3, "f": 1.5, "l": [1, "x", null], "o": {"b": true}});
        e.error = Some(ErrorInfo {
            message: "boom".into(),
            chain: vec!["root".into()],
        });
        e.created_at = from_bson_date(to_bson_date(e.created_at)).expect("date");
        let mut d = encode_entry(&e, 1).expect("encode");
        d.insert("_id", "a");
        let back = decode_entry(&Reader::new("c", &d)).expect("decode");
        assert_eq!(back, e);
    }

    #[test]
    fn malformed_documents_are_named() {
        let d = doc! {"_id": "x", "state": "NOPE"};
        let err = decode_entry(&Reader::new("coll", &d)).expect_err("malformed");
        assert!(err.contains("NOPE"), "{err}");
        let d = doc! {"_id": "x", "state": "APPLIED", "change_id": 5};
        let err = decode_entry(&Reader::new("coll", &d)).expect_err("malformed");
        assert!(err.contains("change_id"), "{err}");
        let r = Reader::new("coll", &d);
        assert!(
            r.what.contains("coll") && r.what.contains("\"x\""),
            "{}",
            r.what
        );
    }
}
