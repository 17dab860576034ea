//! A topic as a change declares it.

/// A topic: its name, partition count and replication factor.
///
/// ```
/// use flamingock_kafka::TopicSpec;
///
/// let orders = TopicSpec::new("orders", 6).replication_factor(3);
/// assert_eq!(orders.name(), "orders");
/// assert_eq!(orders.partitions(), 6);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    name: String,
    partitions: i32,
    replication_factor: i16,
}

impl TopicSpec {
    /// A topic named `name` with `partitions` partitions, replication factor 1.
    pub fn new(name: impl Into<String>, partitions: i32) -> Self {
        TopicSpec {
            name: name.into(),
            partitions,
            replication_factor: 1,
        }
    }

    /// How many brokers keep a copy of each partition (default 1).
    pub fn replication_factor(mut self, n: i16) -> Self {
        self.replication_factor = n;
        self
    }

    /// The topic's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The partition count.
    pub fn partitions(&self) -> i32 {
        self.partitions
    }

    /// The replication factor asked for at creation.
    pub fn replication(&self) -> i16 {
        self.replication_factor
    }

    /// What is wrong with the declaration, checked before anything is sent.
    pub(crate) fn problem(&self) -> Option<String> {
        if !valid_name(&self.name) {
            return Some(format!(
                "'{}' is not a valid topic name (1 to 249 of ASCII letters, digits, '.', '_' and '-'; not '.' or '..')",
                self.name
            ));
        }
        if self.partitions < 1 {
            return Some(format!(
                "topic '{}': {} partitions (at least 1)",
                self.name, self.partitions
            ));
        }
        if self.replication_factor < 1 {
            return Some(format!(
                "topic '{}': replication factor {} (at least 1)",
                self.name, self.replication_factor
            ));
        }
        None
    }
}

/// Kafka's rule for topic names.
pub(crate) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 249
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// A topic as the cluster has it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TopicInfo {
    /// The topic's name.
    pub name: String,
    /// How many partitions it has.
    pub partitions: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_counts_are_checked_before_anything_is_sent() {
        assert!(TopicSpec::new("orders.created-v1_x", 3).problem().is_none());
        for bad in ["", ".", "..", "orders/created", "ørders", &"x".repeat(250)] {
            let p = TopicSpec::new(bad, 1).problem().expect("refused");
            assert!(p.contains("not a valid topic name"), "{p}");
        }
        let p = TopicSpec::new("orders", 0).problem().expect("refused");
        assert!(p.contains("0 partitions"), "{p}");
        let p = TopicSpec::new("orders", 1)
            .replication_factor(0)
            .problem()
            .expect("refused");
        assert!(p.contains("replication factor 0"), "{p}");
    }
}
