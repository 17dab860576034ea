//! What a change declares.

use lapin::types::{AMQPValue, FieldTable, ShortString};

/// The type of an exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExchangeKind {
    /// `direct`.
    Direct,
    /// `fanout`.
    Fanout,
    /// `topic`.
    Topic,
    /// `headers`.
    Headers,
}

impl ExchangeKind {
    pub(crate) fn lapin(self) -> lapin::ExchangeKind {
        match self {
            ExchangeKind::Direct => lapin::ExchangeKind::Direct,
            ExchangeKind::Fanout => lapin::ExchangeKind::Fanout,
            ExchangeKind::Topic => lapin::ExchangeKind::Topic,
            ExchangeKind::Headers => lapin::ExchangeKind::Headers,
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ExchangeKind::Direct => "direct",
            ExchangeKind::Fanout => "fanout",
            ExchangeKind::Topic => "topic",
            ExchangeKind::Headers => "headers",
        }
    }
}

/// A queue as a change declares it: name, durability and the `x-` arguments
/// the broker fixes at creation.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueSpec {
    pub(crate) name: String,
    pub(crate) durable: bool,
    pub(crate) arguments: Vec<(String, Arg)>,
}

/// One queue argument.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Arg {
    Int(i64),
    Text(String),
}

impl QueueSpec {
    /// A durable queue named `name` (survives a broker restart).
    pub fn durable(name: impl Into<String>) -> Self {
        QueueSpec {
            name: name.into(),
            durable: true,
            arguments: Vec::new(),
        }
    }

    /// A transient queue (lost on a broker restart).
    pub fn transient(name: impl Into<String>) -> Self {
        QueueSpec {
            durable: false,
            ..Self::durable(name)
        }
    }

    /// `x-max-length`: the most messages the queue keeps.
    pub fn max_length(self, n: i64) -> Self {
        self.int("x-max-length", n)
    }

    /// `x-message-ttl` in milliseconds.
    pub fn message_ttl_ms(self, ms: i64) -> Self {
        self.int("x-message-ttl", ms)
    }

    /// `x-dead-letter-exchange`: where rejected and expired messages go.
    pub fn dead_letter_exchange(self, exchange: impl Into<String>) -> Self {
        self.text("x-dead-letter-exchange", exchange)
    }

    /// `x-queue-type`: `classic`, `quorum` or `stream`.
    pub fn queue_type(self, kind: impl Into<String>) -> Self {
        self.text("x-queue-type", kind)
    }

    /// Any integer argument.
    pub fn int(mut self, key: impl Into<String>, value: i64) -> Self {
        self.set(key.into(), Arg::Int(value));
        self
    }

    /// Any text argument.
    pub fn text(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.set(key.into(), Arg::Text(value.into()));
        self
    }

    fn set(&mut self, key: String, value: Arg) {
        self.arguments.retain(|(k, _)| *k != key);
        self.arguments.push((key, value));
    }

    /// The queue's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn table(&self) -> FieldTable {
        let mut t = FieldTable::default();
        for (k, v) in &self.arguments {
            let v = match v {
                Arg::Int(n) => AMQPValue::LongLongInt(*n),
                Arg::Text(s) => AMQPValue::LongString(s.as_str().into()),
            };
            t.insert(ShortString::from(k.as_str()), v);
        }
        t
    }

    /// The settings as people read them: `durable, x-max-length=10`.
    pub(crate) fn describe(&self) -> String {
        let mut parts = vec![if self.durable { "durable" } else { "transient" }.to_owned()];
        for (k, v) in &self.arguments {
            parts.push(match v {
                Arg::Int(n) => format!("{k}={n}"),
                Arg::Text(s) => format!("{k}={s}"),
            });
        }
        parts.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_replace_and_describe() {
        let q = QueueSpec::durable("q")
            .max_length(5)
            .max_length(10)
            .dead_letter_exchange("dlx");
        assert_eq!(
            q.describe(),
            "durable, x-max-length=10, x-dead-letter-exchange=dlx"
        );
        assert_eq!(q.table().inner().len(), 2);
    }
}
